//! Properties of the SSE decoder (issue 11): any split of a stream decodes as the whole does
//! (valid streams to the events they were written from; arbitrary bytes to the same items or
//! the same error), the size cap does not depend on how reads were cut, nothing panics, and
//! the line scan looks at each byte once, whatever the read sizes.

use proptest::prelude::*;
use proptest::sample::Index;

use super::{SseDecoder, SseError, SseEvent, SseItem};

/// One line of a generated event block (none contains CR or LF).
#[derive(Debug, Clone)]
enum Line {
    /// `:text`
    Comment(String),
    /// `data: value` (or `data:value` when the value does not start with a space).
    Data(String, bool),
    /// `data` alone: an empty data line.
    BareData,
    /// `event: name`
    Event(String),
    /// `id`, `retry` and unknown fields, which change nothing.
    Other(&'static str, String),
}

/// The line ends the SSE spec allows.
#[derive(Debug, Clone, Copy, PartialEq)]
enum End {
    Lf,
    Cr,
    CrLf,
}

impl End {
    fn bytes(self) -> &'static [u8] {
        match self {
            End::Lf => b"\n",
            End::Cr => b"\r",
            End::CrLf => b"\r\n",
        }
    }
}

/// Lines ended by a blank line: one event (or none, without data).
#[derive(Debug, Clone)]
struct Block {
    lines: Vec<(Line, End)>,
    blank: End,
}

/// A valid stream: a byte-order mark or not, blocks, and how the last block ends (0: with
/// its blank line, 1: without it, 2: without even its last line's end).
#[derive(Debug, Clone)]
struct Stream {
    bom: bool,
    blocks: Vec<Block>,
    tail: u8,
}

fn text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::char::range('a', 'z'),
            1 => Just(':'),
            1 => Just(' '),
            1 => Just('{'),
            1 => Just('"'),
            1 => any::<char>().prop_filter("no line ends", |c| *c != '\r' && *c != '\n'),
        ],
        0..max,
    )
    .prop_map(|cs| cs.into_iter().collect())
}

fn end() -> impl Strategy<Value = End> {
    prop_oneof![Just(End::Lf), Just(End::Cr), Just(End::CrLf)]
}

fn line() -> impl Strategy<Value = Line> {
    prop_oneof![
        2 => text(12).prop_map(Line::Comment),
        5 => (text(24), any::<bool>()).prop_map(|(v, space)| Line::Data(v, space)),
        1 => Just(Line::BareData),
        2 => text(10).prop_map(Line::Event),
        1 => (
            prop::sample::select(vec!["id", "retry", "foo", "Data", "datas", "event2"]),
            text(8)
        )
            .prop_map(|(f, v)| Line::Other(f, v)),
    ]
}

fn stream() -> impl Strategy<Value = Stream> {
    let block = (prop::collection::vec((line(), end()), 0..5), end())
        .prop_map(|(lines, blank)| Block { lines, blank });
    (any::<bool>(), prop::collection::vec(block, 0..8), 0u8..3)
        .prop_map(|(bom, blocks, tail)| Stream { bom, blocks, tail })
}

impl Stream {
    /// The bytes on the wire and the items a correct decoder yields for them.
    fn render(&self) -> (Vec<u8>, Vec<SseItem>) {
        let mut bytes = Vec::new();
        let mut items = Vec::new();
        if self.bom {
            bytes.extend_from_slice(b"\xEF\xBB\xBF");
        }
        let mut last_end = End::Lf;
        let last_block = self.blocks.len().saturating_sub(1);
        for (b, block) in self.blocks.iter().enumerate() {
            let (mut event, mut data) = (None, None::<String>);
            let last_line = block.lines.len().saturating_sub(1);
            for (l, (line, end)) in block.lines.iter().enumerate() {
                let push_data = |data: &mut Option<String>, v: &str| match data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(v);
                    }
                    None => *data = Some(v.to_string()),
                };
                match line {
                    Line::Comment(c) => {
                        bytes.push(b':');
                        bytes.extend_from_slice(c.as_bytes());
                        items.push(SseItem::Comment(c.clone()));
                    }
                    Line::Data(v, space) => {
                        // Only one space after the colon is dropped by the reader.
                        let prefix = if *space || v.starts_with(' ') {
                            "data: "
                        } else {
                            "data:"
                        };
                        bytes.extend_from_slice(prefix.as_bytes());
                        bytes.extend_from_slice(v.as_bytes());
                        push_data(&mut data, v);
                    }
                    Line::BareData => {
                        bytes.extend_from_slice(b"data");
                        push_data(&mut data, "");
                    }
                    Line::Event(name) => {
                        bytes.extend_from_slice(b"event: ");
                        bytes.extend_from_slice(name.as_bytes());
                        event = Some(name.clone());
                    }
                    Line::Other(field, v) => {
                        bytes.extend_from_slice(field.as_bytes());
                        bytes.extend_from_slice(b": ");
                        bytes.extend_from_slice(v.as_bytes());
                    }
                }
                let unended = b == last_block && l == last_line && self.tail == 2;
                if !unended {
                    bytes.extend_from_slice(end.bytes());
                    last_end = *end;
                }
            }
            if b != last_block || self.tail == 0 {
                // A CR then an LF is one line end: after a CR, a blank line ends with CR.
                let blank = if last_end == End::Cr && block.blank == End::Lf {
                    End::Cr
                } else {
                    block.blank
                };
                bytes.extend_from_slice(blank.bytes());
                last_end = blank;
            }
            if let Some(data) = data {
                items.push(SseItem::Event(SseEvent { event, data }));
            }
        }
        (bytes, items)
    }
}

/// Cut `bytes` at the given places.
fn pieces<'a>(bytes: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
    at.sort_unstable();
    at.dedup();
    let mut out = Vec::new();
    let mut from = 0;
    for a in at {
        out.push(&bytes[from..a]);
        from = a;
    }
    out.push(&bytes[from..]);
    out
}

/// Feed the pieces until the first error (a relay stops there), then finish.
fn decode(d: &mut SseDecoder, pieces: &[&[u8]]) -> (Vec<SseItem>, Option<SseError>) {
    let mut out = Vec::new();
    for p in pieces {
        if let Err(e) = d.feed(p, &mut out) {
            return (out, Some(e));
        }
    }
    d.finish(&mut out);
    (out, None)
}

/// Bytes that make SSE's structure likely: line ends, colons, field names, a BOM's bytes.
fn sse_ish_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        3 => any::<u8>().prop_map(|b| vec![b]),
        2 => prop::sample::select(vec![
            &b"\n"[..], b"\r", b"\r\n", b":", b" ", b"data", b"data: x", b"event: e", b"\xEF\xBB\xBF",
            b"\xC3", b"\xA9",
        ])
        .prop_map(<[u8]>::to_vec),
    ];
    prop::collection::vec(piece, 0..max).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A valid stream cut anywhere decodes to the events it was written from, as it does whole.
    #[test]
    fn any_split_of_a_valid_stream_yields_its_events(
        s in stream(),
        cuts in prop::collection::vec(any::<Index>(), 0..10),
    ) {
        let (bytes, expected) = s.render();
        let whole = decode(&mut SseDecoder::default(), &[&bytes]);
        prop_assert_eq!(&whole, &(expected, None));
        let split = decode(&mut SseDecoder::default(), &pieces(&bytes, &cuts));
        prop_assert_eq!(split, whole);
    }

    /// Whether the size cap cuts a stream, and after which items, depends on the stream, not on
    /// how its reads were cut.
    #[test]
    fn the_size_cap_does_not_depend_on_the_reads(
        s in stream(),
        cap in 1usize..200,
        cuts in prop::collection::vec(any::<Index>(), 0..10),
    ) {
        let (bytes, _) = s.render();
        let whole = decode(&mut SseDecoder::new(cap), &[&bytes]);
        let split = decode(&mut SseDecoder::new(cap), &pieces(&bytes, &cuts));
        prop_assert_eq!(split, whole);
    }

    /// Arbitrary bytes never panic, and decode the same (items or error) however they are cut.
    #[test]
    fn arbitrary_bytes_decode_the_same_whole_or_split(
        bytes in sse_ish_bytes(200),
        cap in prop_oneof![Just(super::DEFAULT_MAX_EVENT), 1usize..64],
        cuts in prop::collection::vec(any::<Index>(), 0..16),
    ) {
        let whole = decode(&mut SseDecoder::new(cap), &[&bytes]);
        let split = decode(&mut SseDecoder::new(cap), &pieces(&bytes, &cuts));
        prop_assert_eq!(split, whole);
    }

    /// The line scan looks at each byte at most once, whatever the read sizes: decoding costs
    /// linear time (a rescan of the buffer on every read made a 10 MB line cost seconds).
    #[test]
    fn each_byte_is_looked_at_once(
        prefix in sse_ish_bytes(100),
        long_line in 0usize..20_000,
        suffix in sse_ish_bytes(100),
        reads in prop::collection::vec(1usize..300, 1..50),
    ) {
        let mut bytes = prefix;
        bytes.extend_from_slice(b"\ndata: ");
        bytes.resize(bytes.len() + long_line, b'y');
        bytes.extend_from_slice(&suffix);
        let mut d = SseDecoder::default();
        let mut out = Vec::new();
        let (mut at, mut fed) = (0, 0);
        for n in reads.iter().cycle() {
            if at >= bytes.len() {
                break;
            }
            let next = (at + n).min(bytes.len());
            fed += next - at;
            if d.feed(&bytes[at..next], &mut out).is_err() {
                break;
            }
            at = next;
        }
        prop_assert!(d.looked_at <= fed, "{} bytes looked at for {} fed", d.looked_at, fed);
    }
}

#[test]
fn a_megabyte_line_in_tiny_reads_is_looked_at_once() {
    let mut d = SseDecoder::new(4 * 1024 * 1024);
    let mut out = Vec::new();
    let mut bytes = b"data: ".to_vec();
    bytes.resize(1024 * 1024, b'z');
    bytes.extend_from_slice(b"\r\n\r\n");
    for (i, read) in bytes.chunks(7).enumerate() {
        // Reads of 7 bytes and of 1 byte, alternating in runs.
        if i % 2 == 0 {
            d.feed(read, &mut out).unwrap();
        } else {
            for b in read.chunks(1) {
                d.feed(b, &mut out).unwrap();
            }
        }
    }
    d.finish(&mut out);
    assert_eq!(out.len(), 1);
    assert!(d.looked_at <= bytes.len(), "{}", d.looked_at);
}

/// Found by `the_size_cap_does_not_depend_on_the_reads`: a read holding several small events
/// was refused as one oversized event, because the bytes after the line being decoded (the
/// rest of the read) were counted against it; the same bytes in smaller reads passed.
#[test]
fn a_read_of_many_small_events_is_not_one_oversized_event() {
    let events = b"data: 0123456789\n\n".repeat(20);
    let whole = decode(&mut SseDecoder::new(100), &[&events]);
    assert_eq!(whole.1, None);
    assert_eq!(whole.0.len(), 20);
}

/// Found by `arbitrary_bytes_decode_the_same_whole_or_split`: a line over the cap that arrived
/// in one read was taken (only lines still unfinished at the end of a read were measured), so
/// the same bytes were refused or not depending on the reads.
#[test]
fn a_line_over_the_cap_is_refused_whether_or_not_it_came_in_one_read() {
    let line = [b"id: ".as_slice(), &[b'7'; 200], b"\n"].concat();
    let whole = decode(&mut SseDecoder::new(100), &[&line]);
    let split = decode(&mut SseDecoder::new(100), &[&line[..50], &line[50..]]);
    assert_eq!(whole, (vec![], Some(SseError("event too large"))));
    assert_eq!(split, whole);
}
