//! What every command writes: its output on stdout, its failure on stderr, and the exit code
//! that goes with each.

use std::process::ExitCode;

/// Say why a command failed, on stderr, and fail.
pub(super) fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("modelrelay: {msg}");
    ExitCode::FAILURE
}

/// Write a command's output to stdout. A reader that closed the pipe early (`… | head`) took
/// what it wanted: that is a success, and nothing is said about it.
pub(super) fn output(text: &str) -> ExitCode {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => fail(format_args!("cannot write the output: {e}")),
    }
}

/// One value as pretty JSON on stdout.
pub(super) fn print_json(v: &impl serde::Serialize) -> ExitCode {
    match serde_json::to_string_pretty(v) {
        Ok(s) => output(&(s + "\n")),
        Err(e) => fail(e),
    }
}
