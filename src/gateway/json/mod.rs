//! Quick readings of JSON text shared by the dialects: a walk over the text that builds nothing
//! ([`cursor`]), and a body read by its top-level members and written again for upstream with
//! only the gateway's own members changed ([`members`]). Each one answers `None` where it is
//! not sure to read as serde_json does, and its caller then reads the text with serde.

pub(super) mod cursor;
pub(super) mod members;
