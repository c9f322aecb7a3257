//! What every command writes: its output on stdout, its failure on stderr, and the exit code
//! that goes with each.

use std::process::ExitCode;

/// Say why a command failed, on stderr, and fail. Control characters but line breaks are
/// shown as `�`: a message may repeat what was typed (a `--socket` path holding terminal escape
/// sequences was written raw; found by an independent check).
pub(super) fn fail(msg: impl std::fmt::Display) -> ExitCode {
    let text = msg.to_string();
    let safe: Vec<String> = text.split('\n').map(crate::text::visible).collect();
    eprintln!("modelrelay: {}", safe.join("\n"));
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

/// Whether stdout leads nowhere: `/dev/null` or `/dev/zero`, or closed (`>&-`: Rust's runtime opens
/// `/dev/null` in place of a closed standard descriptor at start, so writes "succeed").
pub(super) fn stdout_goes_nowhere() -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(out) = std::fs::metadata("/dev/stdout") else {
        return false;
    };
    // `/dev/zero` swallows writes just as `/dev/null` does.
    out.file_type().is_char_device()
        && ["/dev/null", "/dev/zero"]
            .iter()
            .any(|sink| std::fs::metadata(sink).is_ok_and(|m| m.rdev() == out.rdev()))
}

/// Write a new key's text, shown this once: unlike [`output`], a reader that closed the pipe did
/// not take it, and any failure names the key that was made (it exists, and whoever has its
/// text is unknown), with what to do.
pub(super) fn secret_output(text: &str, key_id: &str) -> ExitCode {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(format_args!(
            "key {key_id} exists, but its text (shown only once) could not be written ({e}): \
             give it a new text (`modelrelay keys rotate {key_id}`) or revoke it"
        )),
    }
}

/// One value as pretty JSON on stdout.
pub(super) fn print_json(v: &impl serde::Serialize) -> ExitCode {
    match serde_json::to_string_pretty(v) {
        Ok(s) => output(&(s + "\n")),
        Err(e) => fail(e),
    }
}

/// The longest word of a command-line error shown whole: clap repeats the value it refused, and
/// one may be a megabyte.
const LONGEST_WORD: usize = 200;

/// The longest command-line error shown whole.
const LONGEST_MESSAGE: usize = 2_000;

/// Say what clap found wrong with the command line (or print the help and version it was asked
/// for), and the exit code. Clap repeats what was typed, and writes it raw on a terminal: its
/// errors are written here without colours, with control characters shown harmless and each
/// word clipped (a value may be a megabyte).
pub fn command_line_error(e: &clap::Error) -> ExitCode {
    if !e.use_stderr() {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let safe: Vec<String> = e
        .render()
        .to_string()
        .lines()
        .map(|line| {
            line.split(' ')
                .map(|w| crate::text::visible(&crate::text::clipped(w, LONGEST_WORD)))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    // The whole message is clipped too: a value of many short words (or lines) is repeated in
    // full by clap, twice (found by an independent re-check: 240 KB on stderr).
    eprintln!(
        "{}",
        crate::text::clipped(&safe.join("\n"), LONGEST_MESSAGE)
    );
    ExitCode::from(2)
}
