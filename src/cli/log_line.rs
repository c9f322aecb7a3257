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
#[derive(Debug)]
pub struct SafeLine<W>(pub W);

impl<W: Write> Write for SafeLine<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Most lines are printable ASCII: a byte test, then no copy.
        let body = buf.strip_suffix(b"\n").unwrap_or(buf);
        if body.iter().all(|b| (0x20..0x7f).contains(b)) {
            self.0.write_all(buf)?;
            return Ok(buf.len());
        }
        let text = String::from_utf8_lossy(buf);
        let (body, end) = match text.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (&*text, ""),
        };
        if !body.chars().any(hidden) {
            self.0.write_all(buf)?;
            return Ok(buf.len());
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
        self.0.write_all(out.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
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
