//! What every command writes: its output on stdout, its failure on stderr, and the exit code
//! that goes with each.

use std::process::ExitCode;

/// Say why a command failed, on stderr, and fail. Control characters but line breaks are
/// shown as `�`: a message may repeat what was typed (a `--socket` path holding terminal escape
/// sequences was written raw; found by an independent check).
pub(super) fn fail(msg: impl std::fmt::Display) -> ExitCode {
    use std::io::Write;
    let text = msg.to_string();
    let safe: Vec<String> = text.split('\n').map(crate::text::visible).collect();
    // Written, not `eprintln!`: a stderr that is gone (a closed terminal: EIO) panicked
    // (found by an independent check).
    let _ = writeln!(std::io::stderr(), "modelrelay: {}", safe.join("\n"));
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
    match json_text(v) {
        Ok(s) => output(&s),
        Err(e) => fail(e),
    }
}

/// `v` as pretty JSON and a line break, its strings' invisible characters escaped (`\u202e`):
/// the same value to a JSON reader, but a bidi override a customer or DeepSeek wrote (an
/// email, a currency) no longer reorders the operator's terminal when the JSON itself is
/// shown (serde_json escapes only control characters; found by an independent check). A
/// reader that decodes the strings (`jq -r`) gets them back as they are.
pub(super) fn json_text(v: &impl serde::Serialize) -> serde_json::Result<String> {
    let text = serde_json::to_string_pretty(v)?;
    // Invisible characters are never structural: each stands inside a string. Nor are DEL and
    // the C1 controls, which serde_json leaves raw too (U+009B and U+009D begin terminal
    // commands on some terminals; found by a re-check). A raw line break is the layout's:
    // serde writes one inside a string as `\n`.
    let escaped = |c: char| crate::text::is_invisible(c) || (c.is_control() && c != '\n');
    if !text.chars().any(escaped) {
        return Ok(text + "\n");
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if escaped(c) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    Ok(out + "\n")
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Invisible characters come out escaped, astral ones as a surrogate pair, and the text
    /// reads back as the same value; plain text is left as serde writes it.
    #[test]
    fn json_output_escapes_invisible_characters_and_keeps_the_value() {
        let v = serde_json::json!({
            "email": "a\u{202E}moc.evil@b.example",
            "tag": "x\u{E0041}y",
            "c1": "a\u{9B}31m\u{9D}0;t\u{7F}",
            "name": "Zoë 李",
        });
        let text = json_text(&v).unwrap();
        assert!(text.contains("a\\u202emoc"), "{text}");
        assert!(text.contains("x\\udb40\\udc41y"), "{text}");
        assert!(text.contains("a\\u009b31m\\u009d0;t\\u007f"), "{text}");
        assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "{text}");
        assert!(text.contains("Zoë 李"), "{text}");
        assert!(!text.chars().any(crate::text::is_invisible), "{text}");
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, v);
        let plain = serde_json::json!({"a": 1, "b": "é"});
        assert_eq!(
            json_text(&plain).unwrap(),
            serde_json::to_string_pretty(&plain).unwrap() + "\n"
        );
    }
}
