//! Receipts and notices by email: the handle the rest of the daemon pokes ([`Mailer`]), the
//! messages in both languages ([`message`]), and the background task that sends the outbox
//! over SMTP ([`outbox`]).
//!
//! What to send is decided where it happens and queued in the database in the same
//! transaction (`store::mail`); this module only renders and delivers. Nothing on a request's,
//! a payment's or a page's path waits on SMTP.

pub mod handle;
pub mod message;
pub mod outbox;

pub use handle::Mailer;
