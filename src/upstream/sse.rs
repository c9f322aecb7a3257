//! A small server-sent-events decoder for upstream streams.
//!
//! Hand-written rather than taken from a crate because the relay needs what SSE crates drop:
//! comment lines (`: keep-alive`) are passed through to the client, and they must be told
//! apart from data so that the idle timer ignores them.

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
    /// A comment line, without the leading `:`.
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

/// Feed bytes in, take items out.
#[derive(Default)]
pub struct SseDecoder {
    buf: BytesMut,
    event: Option<String>,
    data: Option<String>,
}

/// Longest line accepted; a stream that sends more without a newline is malformed.
const MAX_LINE: usize = 16 * 1024 * 1024;

/// The stream broke the format.
#[derive(Debug, thiserror::Error)]
#[error("malformed event stream: {0}")]
pub struct SseError(&'static str);

impl SseDecoder {
    /// Append bytes and return every complete item.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<SseItem>) -> Result<(), SseError> {
        self.buf.extend_from_slice(chunk);
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
            let mut line = self.buf.split_to(pos + 1);
            line.truncate(pos);
            if line.last() == Some(&b'\r') {
                line.truncate(pos - 1);
            }
            let line = std::str::from_utf8(&line).map_err(|_| SseError("invalid UTF-8"))?;
            self.line(line, out);
        }
        if self.buf.len() > MAX_LINE {
            self.buf.advance(self.buf.len());
            return Err(SseError("line too long"));
        }
        Ok(())
    }

    /// The stream ended: flush an event that lacked its blank line.
    pub fn finish(&mut self, out: &mut Vec<SseItem>) {
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            if let Ok(line) = std::str::from_utf8(&rest) {
                let line = line.trim_end_matches('\r').to_string();
                self.line(&line, out);
            }
        }
        self.dispatch(out);
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
        } else if let Some(c) = line.strip_prefix(':') {
            out.push(SseItem::Comment(c.to_string()));
        } else if let Some(v) = line.strip_prefix("data:") {
            let v = v.strip_prefix(' ').unwrap_or(v);
            match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(v);
                }
                None => self.data = Some(v.to_string()),
            }
        } else if let Some(v) = line.strip_prefix("event:") {
            self.event = Some(v.strip_prefix(' ').unwrap_or(v).to_string());
        }
        // `id:` and `retry:` are not used by DeepSeek; they are dropped.
    }
}

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
}
