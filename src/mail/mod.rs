//! Receipts and notices by email: the handle the rest of the daemon pokes ([`Mailer`]), the
//! messages in both languages ([`message`]), and the background task that sends the outbox
//! over SMTP ([`outbox`]), with its reading of whose fault a refusal is (`refusal`).
//!
//! What to send is decided where it happens and queued in the database in the same
//! transaction (`store::mail`); this module only renders and delivers. Nothing on a request's,
//! a payment's or a page's path waits on SMTP.

pub mod handle;
pub mod message;
pub mod outbox;
mod refusal;

pub use handle::Mailer;

/// An email as addresses are compared: trimmed, lower-case, in Unicode's composed form (NFC:
/// `zoë` typed as `e` + a combining diaeresis, as some keyboards and macOS file names give it,
/// is `zoë`; found by an independent check: the order was not found), its domain in ASCII as
/// mail carries it (IDNA: `bücher.example`, `xn--bcher-kva.example` and a fullwidth
/// `ｅxample.com` are each one domain); a receipt's `To:` shows the ASCII form, which a customer
/// may copy (found by an independent check too). The order look-up compares so, and so does
/// the cap on an address's replacement notices.
pub fn comparable_email(e: &str) -> String {
    let nfc = icu_normalizer::ComposingNormalizerBorrowed::new_nfc().normalize(e);
    outbox::ascii_domain(&nfc.trim().to_lowercase()).into_owned()
}
