//! The messages (placeholder).
