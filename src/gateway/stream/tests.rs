//! The size of the futures every open stream keeps alive. A state held inline in them (a whole
//! answer's reading, settlement, the end's flush) sizes them for a stream's whole life; at
//! 10 000 open streams two such growths cost ~4 KiB of memory a stream under mimalloc before
//! anyone noticed (bench/PROFILE.md), so they are pinned here.

use std::future::Future;

use super::pump;
use crate::gateway::anthropic::Anthropic;
use crate::gateway::openai::OpenAi;
use crate::gateway::pipeline::handle;

/// The size of the future `f` returns, read from its type (nothing is called).
fn future_of<A, B, C, F: Future>(_f: impl FnOnce(A, B, C) -> F) -> usize {
    std::mem::size_of::<F>()
}

/// The size of the future `f` returns, for a two-argument `f`.
fn future_of2<A, B, F: Future>(_f: impl FnOnce(A, B) -> F) -> usize {
    std::mem::size_of::<F>()
}

/// A stream's task holds its relay and its pending bill boxed, and its end phase boxed too:
/// its own state is the pump loop's (544 bytes in a test build; 4 128 with the end inline).
#[test]
fn a_streams_task_stays_small() {
    for (dialect, size) in [
        ("openai", future_of(pump::<OpenAi>)),
        ("anthropic", future_of(pump::<Anthropic>)),
    ] {
        assert!(
            size <= 1024,
            "{dialect}: a stream's task future is {size} bytes"
        );
    }
}

/// A request's handler future lives until a stream's head leaves (through every stream's
/// first moments, thousands at once in a burst): the relay, whose largest state is a whole
/// answer's reading and settlement, is boxed, not held inline (~1.1 KiB in a test build,
/// 6.2 KiB with the relay inline).
#[test]
fn a_requests_handler_stays_small() {
    for (dialect, size) in [
        ("openai", future_of2(handle::<OpenAi>)),
        ("anthropic", future_of2(handle::<Anthropic>)),
    ] {
        assert!(
            size <= 2048,
            "{dialect}: the handler future is {size} bytes"
        );
    }
}
