//! Receipts and notices by email (placeholder, filled in by the mail step).
