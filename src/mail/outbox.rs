//! The sender (placeholder).
