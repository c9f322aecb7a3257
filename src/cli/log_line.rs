//! The daemon's log lines, one per event, with nothing in them that a terminal or a log reader
//! would take for more than text.
//!
//! A log line repeats what others wrote — an upstream's error message, a webhook's ids, a
//! client's header — and tracing's formatter writes a field's `Display` as it is: a newline
//! in it forged a log line, an escape sequence reached the terminal of an operator reading
//! the journal (found by an independent check). Escaping each field at each call site is
//! easy to forget, so the writer escapes the whole line: every control character but the
//! line's final newline, and every invisible one, is written as `\u{…}`. The formatter's own
//! colours are escape sequences too, so they are off.

use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;

/// A [`MakeWriter`] for stderr whose lines are escaped (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct SafeStderr;

impl<'a> MakeWriter<'a> for SafeStderr {
    type Writer = SafeLine<io::Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        SafeLine(io::stderr())
    }
}

/// Writes each buffer it is given (the formatter gives one whole event) escaped to `W`.
///
/// A line that cannot be written (stderr a file on a full disk, a closed pipe) is dropped, and
/// the write still reports success: told of the failure, the formatter reports it with
/// `eprintln!`, which panics when stderr fails, in whichever thread logged — the ledger's
/// writer died that way on a full disk, and the daemon went on serving answers it could not
/// bill (found by an independent check).
#[derive(Debug)]
pub struct SafeLine<W>(pub W);

impl<W: Write> Write for SafeLine<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Whatever the line's fate, it is taken.
        let _ = self.write_escaped(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = self.0.flush();
        Ok(())
    }
}

impl<W: Write> SafeLine<W> {
    fn write_escaped(&mut self, buf: &[u8]) -> io::Result<()> {
        // Most lines are printable ASCII: a byte test, then no copy.
        let body = buf.strip_suffix(b"\n").unwrap_or(buf);
        if body.iter().all(|b| (0x20..0x7f).contains(b)) {
            return self.0.write_all(buf);
        }
        let text = String::from_utf8_lossy(buf);
        let (body, end) = match text.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (&*text, ""),
        };
        if !body.chars().any(hidden) {
            return self.0.write_all(buf);
        }
        let mut out = String::with_capacity(buf.len() + 16);
        for c in body.chars() {
            if hidden(c) {
                out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
            } else {
                out.push(c);
            }
        }
        out.push_str(end);
        self.0.write_all(out.as_bytes())
    }
}

fn hidden(c: char) -> bool {
    c.is_control() || crate::text::is_invisible(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(s: &str) -> String {
        let mut w = SafeLine(Vec::new());
        w.write_all(s.as_bytes()).unwrap();
        String::from_utf8(w.0).unwrap()
    }

    /// A log destination on a full disk.
    struct Full;

    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from_raw_os_error(28))
        }

        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::from_raw_os_error(28))
        }
    }

    #[test]
    fn a_line_that_cannot_be_written_is_dropped_not_an_error() {
        let mut w = SafeLine(Full);
        for text in ["plain\n", "with \u{1b} escape\n", "名\n"] {
            assert_eq!(w.write(text.as_bytes()).unwrap(), text.len(), "{text:?}");
        }
        w.write_all(b"whole line\n").unwrap();
        w.flush().unwrap();
    }

    #[test]
    fn a_line_keeps_its_end_and_loses_everything_else_that_is_not_text() {
        assert_eq!(line("plain 名 text\n"), "plain 名 text\n");
        assert_eq!(
            line("WARN capture_id=CAP\u{1b}]0;WH\u{7}\nFAKE INFO line\u{202e}\n"),
            "WARN capture_id=CAP\\u{1b}]0;WH\\u{7}\\u{a}FAKE INFO line\\u{202e}\n"
        );
        assert_eq!(line("tab\tand\r\u{2028}"), "tab\\u{9}and\\u{d}\\u{2028}");
    }

    #[test]
    fn the_formatter_writes_one_line_per_event_through_it() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Shared(Arc<Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let sink = Shared::default();
        let make = {
            let sink = sink.clone();
            move || SafeLine(sink.clone())
        };
        let subscriber = tracing_subscriber::fmt()
            .with_writer(make)
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let id = "CAP\nINFO forged";
            tracing::warn!(capture_id = %id, "webhook about an order we do not have");
        });
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("capture_id=CAP\\u{a}INFO forged"), "{text}");
    }
}
