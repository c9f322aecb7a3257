//! Keys in memory: the table the request path authenticates against, and each key's balance;
//! key identification (which key a request presents) in [`identify`].
//!
//! The database is the record, this table is the working copy: it is loaded at start-up and
//! every change goes to both. The request path only ever reads this table, with no lock: the
//! maps sit behind an `ArcSwap` (copy on write — keys are created rarely; [`KeyTable`]) and
//! each balance is a set of atomics changed by compare-and-swap.
//!
//! A key's [`KeyState`] lives as long as the key, whatever happens to it: a top-up adds to its
//! atomics, a plan upgrade swaps its plan and rate limiter, a rotation swaps its display prefix
//! (and which hash leads to it in the table). Requests in flight hold the same `Arc` and settle
//! on the same balance throughout.

pub mod identify;
mod in_flight;
mod live;
pub mod prompts;
pub mod seal;
mod table;
pub mod token;

pub use crate::status::KeyStatus;
pub use in_flight::KeySlot;
pub use live::{Balance, KeyRecord, KeyState, LOW_BALANCE_DIVISOR, Notice, RateCheck, Settled};
pub use table::KeyTable;
