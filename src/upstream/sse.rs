//! A server-sent-events decoder for upstream streams.
//!
//! Hand-written rather than taken from a crate because the relay needs what SSE crates drop:
//! comment lines (`: keep-alive`) are reported, so the relay can keep a client's connection
//! warm while telling them apart from data for the idle timer; and it needs a hard cap on one
//! event's size, checked as bytes arrive.
//!
//! It follows the SSE specification's line rules: a line ends at CRLF, LF or a lone CR (a CR
//! at the end of one read whose LF comes in the next is one line end, not two). Only what was
//! decoded is ever relayed, so no byte sequence can smuggle an event past the relay's
//! rewriting. Each byte is looked at once: scanning resumes where the last read stopped, so a
//! huge line costs linear time, and is cut as soon as it passes the cap.

use bytes::{Buf, BytesMut};

/// One event of an SSE stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// Its `event:` name, when it had one (Anthropic's streams name every event).
    pub event: Option<String>,
    /// Its data (multi-line data joined with `\n`).
    pub data: String,
}

/// One item of an SSE stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    /// A comment line, without the leading `:` (never contains CR or LF).
    Comment(String),
    /// An event with data.
    Event(SseEvent),
}

impl SseItem {
    /// An event with data only.
    pub fn data(data: impl Into<String>) -> SseItem {
        SseItem::Event(SseEvent {
            event: None,
            data: data.into(),
        })
    }
}

/// Largest event accepted by default (its data and its pending line together).
pub const DEFAULT_MAX_EVENT: usize = 1024 * 1024;

/// The stream broke the format.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed event stream: {0}")]
pub struct SseError(&'static str);

/// Feed bytes in, take items out.
pub struct SseDecoder {
    /// Bytes of the line being read (everything before them was consumed).
    buf: BytesMut,
    /// How much of `buf` is known to hold no line end.
    scanned: usize,
    /// The last line ended with a CR at the end of a read: an LF that starts the next read
    /// belongs to it.
    after_cr: bool,
    /// The stream's first bytes are still to come (a byte-order mark there is dropped).
    at_start: bool,
    event: Option<String>,
    data: Option<String>,
    max_event: usize,
    /// Bytes the line scan has looked at (the proof, in tests, that each is looked at once).
    #[cfg(test)]
    looked_at: usize,
}

impl Default for SseDecoder {
    fn default() -> Self {
        SseDecoder::new(DEFAULT_MAX_EVENT)
    }
}

impl SseDecoder {
    /// A decoder that refuses events larger than `max_event` bytes.
    pub fn new(max_event: usize) -> SseDecoder {
        SseDecoder {
            buf: BytesMut::new(),
            scanned: 0,
            after_cr: false,
            at_start: true,
            event: None,
            data: None,
            max_event,
            #[cfg(test)]
            looked_at: 0,
        }
    }

    /// Append bytes and return every complete item.
    pub fn feed(&mut self, mut chunk: &[u8], out: &mut Vec<SseItem>) -> Result<(), SseError> {
        if self.after_cr && !chunk.is_empty() {
            self.after_cr = false;
            if chunk[0] == b'\n' {
                chunk = &chunk[1..];
            }
        }
        self.buf.extend_from_slice(chunk);
        if self.at_start {
            if self.buf.len() < 3 && b"\xEF\xBB\xBF".starts_with(&self.buf) {
                return Ok(());
            }
            self.at_start = false;
            if self.buf.starts_with(b"\xEF\xBB\xBF") {
                self.buf.advance(3);
            }
        }
        // memchr's SIMD search: a byte-at-a-time scan was the largest single cost of relaying
        // a stream (callgrind: ~2k instructions per event of ~250 bytes).
        while let Some(pos) = memchr::memchr2(b'\n', b'\r', &self.buf[self.scanned..]) {
            #[cfg(test)]
            {
                self.looked_at += pos + 1;
            }
            let end = self.scanned + pos;
            let mut skip = 1;
            if self.buf[end] == b'\r' {
                match self.buf.get(end + 1) {
                    Some(b'\n') => skip = 2,
                    Some(_) => {}
                    // Its LF, if any, comes with the next read.
                    None => self.after_cr = true,
                }
            }
            let line = self.buf.split_to(end);
            self.buf.advance(skip);
            self.scanned = 0;
            // The event so far and this line, not the rest of the read: whether a stream is
            // cut must not depend on how its bytes were split into reads.
            if self.held(line.len()) > self.max_event {
                return Err(self.too_large());
            }
            let line = std::str::from_utf8(&line).map_err(|_| SseError("invalid UTF-8"))?;
            self.line(line, out);
        }
        #[cfg(test)]
        {
            self.looked_at += self.buf.len() - self.scanned;
        }
        self.scanned = self.buf.len();
        if self.held(self.buf.len()) > self.max_event {
            return Err(self.too_large());
        }
        Ok(())
    }

    /// The stream ended: flush an event that lacked its blank line.
    pub fn finish(&mut self, out: &mut Vec<SseItem>) {
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            self.scanned = 0;
            if let Ok(line) = std::str::from_utf8(&rest) {
                let line = line.to_string();
                // At the end nothing more can grow; an oversized tail was refused by `feed`.
                self.line(&line, out);
            }
        }
        self.dispatch(out);
    }

    /// Bytes held for the event being read: its data so far and a line of `line` bytes (a
    /// data line adds less than its own length, so checking before each line bounds the data).
    fn held(&self, line: usize) -> usize {
        line + self.data.as_ref().map_or(0, String::len)
    }

    /// Refuse the event being read, and drop what was held for it.
    fn too_large(&mut self) -> SseError {
        self.buf.clear();
        self.scanned = 0;
        self.data = None;
        SseError("event too large")
    }

    /// A blank line ends an event: emit it if it had data (an event without data is dropped,
    /// as the SSE spec says), and start afresh.
    fn dispatch(&mut self, out: &mut Vec<SseItem>) {
        let event = self.event.take();
        if let Some(data) = self.data.take() {
            out.push(SseItem::Event(SseEvent { event, data }));
        }
    }

    fn line(&mut self, line: &str, out: &mut Vec<SseItem>) {
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if let Some(c) = line.strip_prefix(':') {
            out.push(SseItem::Comment(c.to_string()));
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            "event" => self.event = Some(value.to_string()),
            // `id` and `retry` are not used by DeepSeek; unknown fields are ignored (the spec).
            _ => {}
        }
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests {
    use super::*;

    fn decode(parts: &[&[u8]]) -> Vec<SseItem> {
        let mut d = SseDecoder::default();
        let mut out = Vec::new();
        for p in parts {
            d.feed(p, &mut out).unwrap();
        }
        d.finish(&mut out);
        out
    }

    #[test]
    fn splits_events_across_chunks() {
        let items = decode(&[
            b": keep-alive\n\nda",
            b"ta: {\"a\":1}\r\n",
            b"\r\ndata: [DONE]\n\n",
        ]);
        assert_eq!(
            items,
            vec![
                SseItem::Comment(" keep-alive".into()),
                SseItem::data("{\"a\":1}"),
                SseItem::data("[DONE]"),
            ]
        );
    }

    #[test]
    fn multi_line_data_and_unterminated_tail() {
        let items = decode(&[b"data: a\ndata: b\n\nevent: x\ndata:c"]);
        assert_eq!(
            items,
            vec![
                SseItem::data("a\nb"),
                SseItem::Event(SseEvent {
                    event: Some("x".into()),
                    data: "c".into()
                })
            ]
        );
    }

    #[test]
    fn a_lone_cr_ends_a_line() {
        // A keep-alive comment hiding an event behind a bare CR: a client's parser sees two
        // lines, so the relay must too (and then rewrite the event like any other).
        let items = decode(&[b": ping\rdata: {\"injected\":1}\n\n"]);
        assert_eq!(
            items,
            vec![
                SseItem::Comment(" ping".into()),
                SseItem::data("{\"injected\":1}"),
            ]
        );
        // CR at the end of one read, LF at the start of the next: one line end.
        let items = decode(&[b"data: a\r", b"\ndata: b\r", b"\r"]);
        assert_eq!(items, vec![SseItem::data("a\nb")]);
        // CR CR is a line end and a blank line.
        assert_eq!(decode(&[b"data: a\r\rdata: b\r\r"]).len(), 2);
    }

    #[test]
    fn fields_without_colon_bom_and_unknown_fields() {
        let items = decode(&[b"\xEF\xBB", b"\xBFdata\nid: 7\nretry: 1\nfoo: x\n\n"]);
        assert_eq!(items, vec![SseItem::data("")]);
        // An event with no data is dropped.
        assert!(decode(&[b"event: ping\n\n"]).is_empty());
    }

    #[test]
    fn an_event_over_the_cap_is_refused_as_it_arrives() {
        let mut d = SseDecoder::new(100);
        let mut out = Vec::new();
        d.feed(b"data: ", &mut out).unwrap();
        assert_eq!(
            d.feed(&[b'x'; 200], &mut out),
            Err(SseError("event too large"))
        );
        // Many small data lines adding up to more than the cap are refused too.
        let mut d = SseDecoder::new(100);
        let many = b"data: 0123456789\n".repeat(20);
        assert_eq!(d.feed(&many, &mut out), Err(SseError("event too large")));
        assert!(out.is_empty());
    }

    #[test]
    fn a_long_line_in_small_reads_is_scanned_once() {
        // 4 MiB fed 1 KiB at a time: quadratic rescanning would take seconds in a debug build.
        let mut d = SseDecoder::new(8 * 1024 * 1024);
        let mut out = Vec::new();
        d.feed(b"data: ", &mut out).unwrap();
        let piece = [b'y'; 1024];
        for _ in 0..4096 {
            d.feed(&piece, &mut out).unwrap();
        }
        d.feed(b"\n\n", &mut out).unwrap();
        match &out[..] {
            [SseItem::Event(e)] => assert_eq!(e.data.len(), 4 * 1024 * 1024),
            other => panic!("{other:?}"),
        }
    }
}
