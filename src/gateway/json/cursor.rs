//! A walk over JSON text for the quick readings (`openai/chunk/scan.rs`, the request views of
//! both dialects, [`super::members`]): objects member by member, arrays element by element,
//! any value checked and passed over, strings measured as decoded — without building anything.
//!
//! Hand-written, and why: serde_json's `MapAccess` path was most of the chunk view's ~7k
//! instructions per streamed chunk under callgrind (bench/PROFILE.md). Every method answers
//! `None` where the text is not JSON or not JSON it is sure to read as serde_json does (an
//! escaped key, a `\u` escape that is not a whole character, nesting deeper than
//! [`MAX_DEPTH`]); its callers then let serde read the text. It validates what it passes over
//! as serde_json would: strings without raw control characters and with valid escapes,
//! numbers by JSON's grammar (and short of what overflows an `f64`, which serde refuses),
//! `true`/`false`/`null`.

use std::ops::Range;

/// Deeper nesting is left to serde (its own limit is 128).
const MAX_DEPTH: u32 = 64;

/// Words (of eight bytes) of a string scanned without finding its end before the rest of the
/// run goes to [`Cursor::long_run`]: a short string (keys, a token's text) is done before a
/// call would pay for itself; a long one (a prompt, a file, a tool's description) is scanned
/// many times faster (bench/PROFILE.md).
const LONG_RUN_WORDS: u32 = 4;

/// The bytes of the word (eight bytes of a string, little-endian) that are `"`, `\` or a
/// control character, as each byte's high bit: the classic "has a zero byte" and "has a byte
/// less than n" tests. A borrow can mark a byte above a true one, never below, so the lowest
/// bit set is the first such byte exactly.
fn ends_run(x: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let less = |v: u64, n: u64| v.wrapping_sub(ONES * n) & !v & HIGH;
    less(x ^ (ONES * b'"' as u64), 1) | less(x ^ (ONES * b'\\' as u64), 1) | less(x, 0x20)
}

/// Whether `bytes` holds a control character (below 0x20): eight bytes at a time with the
/// word test of [`ends_run`], the last few one by one.
fn has_control(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut words = bytes.chunks_exact(8);
    let found = words.by_ref().fold(0, |found, w| {
        let x = <[u8; 8]>::try_from(w).map_or(0, u64::from_le_bytes);
        found | (x.wrapping_sub(ONES * 0x20) & !x & HIGH)
    });
    found != 0 || words.remainder().iter().any(|&b| b < 0x20)
}

/// The walk over the text; every method answers `None` where the text is not JSON, or not
/// JSON this scanner is sure to read as serde does. A copy is a place to come back to.
#[derive(Clone)]
pub(in crate::gateway) struct Cursor<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
    depth: u32,
}

impl<'a> Cursor<'a> {
    /// A walk from the start of `s`.
    pub(in crate::gateway) fn new(s: &'a str) -> Cursor<'a> {
        Cursor {
            s,
            b: s.as_bytes(),
            i: 0,
            depth: 0,
        }
    }

    /// Only whitespace is left.
    pub(in crate::gateway) fn at_end(&mut self) -> bool {
        self.ws();
        self.i == self.b.len()
    }

    /// The next value's text (as serde's `RawValue` has it: from its first byte to its last).
    pub(in crate::gateway) fn raw_value(&mut self) -> Option<&'a str> {
        self.value_with(Self::skip_value)
    }

    /// The next value read by `read` (which must pass over exactly one value), and its text.
    pub(in crate::gateway) fn value_with(
        &mut self,
        read: impl FnOnce(&mut Self) -> Option<()>,
    ) -> Option<&'a str> {
        self.ws();
        let start = self.i;
        read(self)?;
        Some(&self.s[start..self.i])
    }

    /// JSON's whitespace (serde_json's: space, LF, CR, tab).
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    /// The next value's first byte (after whitespace), not consumed: what kind of value it is.
    pub(in crate::gateway) fn next_byte(&mut self) -> Option<u8> {
        self.peek()
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
    }

    #[inline(always)]
    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.i += 1)
    }

    /// `null` next (after whitespace): consumed, `true`.
    pub(in crate::gateway) fn null(&mut self) -> bool {
        self.peek();
        let yes = self.b[self.i..].starts_with(b"null");
        if yes {
            self.i += 4;
        }
        yes
    }

    fn enter(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    /// An object; `f` reads each member's value, given its key (unescaped keys only).
    pub(in crate::gateway) fn members(
        &mut self,
        mut f: impl FnMut(&mut Self, &'a str) -> Option<()>,
    ) -> Option<()> {
        self.object::<false>(|c, key| {
            let s = c.s;
            f(c, s.get(key)?)
        })
    }

    /// An object; `f` reads each member's value, given its key decoded — an escaped key too
    /// (decoded by serde: rare), as a JSON map names it.
    pub(in crate::gateway) fn members_decoded(
        &mut self,
        mut f: impl FnMut(&mut Self, &str) -> Option<()>,
    ) -> Option<()> {
        self.object::<true>(|c, key| {
            let s = c.s;
            let inner = s.get(key.clone())?;
            if memchr::memchr(b'\\', inner.as_bytes()).is_none() {
                return f(c, inner);
            }
            let name: String = serde_json::from_str(s.get(key.start - 1..key.end + 1)?).ok()?;
            f(c, &name)
        })
    }

    /// An object; `f` reads each member's value, given where its key is as written (between
    /// its quotes, escapes and all) when `ESCAPED_KEYS`, else only where no key holds an escape.
    /// The key is passed as a range, not a `&str`: a `str` slice checks both ends for a
    /// character boundary, ~20 instructions a key that [`Cursor::skip_value`] and
    /// [`Cursor::compact_len`] (bytes are enough for its repeat check) do not need.
    #[inline(always)]
    fn object<const ESCAPED_KEYS: bool>(
        &mut self,
        mut f: impl FnMut(&mut Self, Range<usize>) -> Option<()>,
    ) -> Option<()> {
        self.eat(b'{')?;
        self.enter()?;
        if self.peek()? == b'}' {
            self.i += 1;
        } else {
            loop {
                if self.peek()? != b'"' {
                    return None;
                }
                let (start, _, escaped) = self.string_at()?;
                if escaped && !ESCAPED_KEYS {
                    return None;
                }
                let key = start + 1..self.i - 1;
                self.eat(b':')?;
                f(self, key)?;
                match self.peek()? {
                    b',' => self.i += 1,
                    b'}' => {
                        self.i += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        self.depth -= 1;
        Some(())
    }

    /// An array; `f` reads each element.
    pub(in crate::gateway) fn elements(
        &mut self,
        mut f: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
        self.eat(b'[')?;
        self.enter()?;
        if self.peek()? == b']' {
            self.i += 1;
        } else {
            loop {
                f(self)?;
                match self.peek()? {
                    b',' => self.i += 1,
                    b']' => {
                        self.i += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        self.depth -= 1;
        Some(())
    }

    /// A non-negative integer of at most 19 digits (so it fits in 64 bits) as JSON writes
    /// one; `None` for anything else (a sign, a fraction, an exponent, more digits, a leading
    /// zero, another kind of value), which the caller leaves to serde.
    pub(in crate::gateway) fn plain_count(&mut self) -> Option<u64> {
        self.ws();
        let rest = &self.b[self.i..];
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > 19 || (digits > 1 && rest[0] == b'0') {
            return None;
        }
        if matches!(rest.get(digits), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        let n = rest[..digits]
            .iter()
            .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        self.i += digits;
        Some(n)
    }

    /// Any value, checked and passed over.
    pub(in crate::gateway) fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            // A key is only passed over: an escaped one is as good as any.
            b'{' => self.object::<true>(|c, _| c.skip_value()),
            b'[' => self.elements(|c| c.skip_value()),
            b'"' => self.string_at().map(drop),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number(),
        }
    }

    /// Any value, checked and passed over, and the length of the compact text serde_json
    /// writes for it once read into a `Value` (`Value::to_string`): no whitespace, strings
    /// escaped its way. `None` where that text is not sure to be a plain function of this one:
    /// a float (its digits are ryu's), an integer that may not fit 64 bits, `-0`, a key twice
    /// in one object (the map keeps one), an object of more than 32 members.
    pub(in crate::gateway) fn compact_len(&mut self) -> Option<u64> {
        match self.peek()? {
            b'{' => {
                let mut keys: [&[u8]; 32] = [b""; 32];
                let (mut n, mut len) = (0, 1u64);
                self.object::<false>(|c, span| {
                    let key = &c.b[span];
                    if n == keys.len() || keys[..n].contains(&key) {
                        return None;
                    }
                    keys[n] = key;
                    n += 1;
                    // `"key":` and the value, then a `,` or the closing `}`.
                    len += key.len() as u64 + 4 + c.compact_len()?;
                    Some(())
                })?;
                Some(len.max(2))
            }
            b'[' => {
                let mut len = 1u64;
                self.elements(|c| {
                    len += c.compact_len()? + 1;
                    Some(())
                })?;
                Some(len.max(2))
            }
            b'"' => {
                let (start, _, escaped) = self.string_at()?;
                if escaped {
                    Some(2 + compact_escaped(&self.b[start + 1..self.i - 1]))
                } else {
                    Some((self.i - start) as u64)
                }
            }
            b't' => self.literal(b"true").map(|()| 4),
            b'f' => self.literal(b"false").map(|()| 5),
            b'n' => self.literal(b"null").map(|()| 4),
            _ => {
                let start = self.i;
                self.number()?;
                let text = &self.b[start..self.i];
                let digits = text.strip_prefix(b"-").unwrap_or(text);
                let integer = digits.iter().all(u8::is_ascii_digit);
                (integer && digits.len() <= 18 && text != b"-0").then_some(text.len() as u64)
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.b[self.i..]
            .starts_with(word)
            .then(|| self.i += word.len())
    }

    /// JSON's number grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`, and
    /// serde_json's range: it refuses a number whose value overflows an `f64` (~1.8e308).
    fn number(&mut self) -> Option<()> {
        let start = self.i;
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        // The decimal place of the first significant digit (`None` while the value is 0).
        let mut place = match self.b.get(self.i)? {
            b'0' => {
                self.i += 1;
                None
            }
            b'1'..=b'9' => {
                let at = self.i;
                self.digits();
                Some((self.i - at) as i64 - 1)
            }
            _ => return None,
        };
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            let at = self.i;
            self.some_digits()?;
            if place.is_none() {
                place = self.b[at..self.i]
                    .iter()
                    .position(|&d| d != b'0')
                    .map(|p| -(p as i64) - 1);
            }
        }
        if let Some(b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
            let minus = self.b.get(self.i) == Some(&b'-');
            if let Some(b'+' | b'-') = self.b.get(self.i) {
                self.i += 1;
            }
            let at = self.i;
            self.some_digits()?;
            let exp = self.b[at..self.i]
                .iter()
                .fold(0i64, |e, d| (e * 10 + i64::from(d - b'0')).min(1 << 40));
            place = place.map(|p| if minus { p - exp } else { p + exp });
        }
        match place {
            Some(309..) => None,
            // Near the edge (rare): as serde_json reads it, correctly rounded.
            Some(308) => self.s[start..self.i]
                .parse::<f64>()
                .is_ok_and(f64::is_finite)
                .then_some(()),
            _ => Some(()),
        }
    }

    fn digits(&mut self) {
        while self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let at = self.i;
        self.digits();
        (self.i > at).then_some(())
    }

    /// A string next (after whitespace): its decoded length in bytes.
    pub(in crate::gateway) fn text(&mut self) -> Option<usize> {
        if self.peek()? != b'"' {
            return None;
        }
        self.string_at().map(|(_, len, _)| len)
    }

    /// The next value's decoded length if it is a string, 0 for any other value (passed over):
    /// how the trees count a text member with `as_str`.
    pub(in crate::gateway) fn text_or_zero(&mut self) -> Option<usize> {
        if self.peek()? == b'"' {
            self.text()
        } else {
            self.skip_value().map(|()| 0)
        }
    }

    /// The string at the cursor (on its `"`): its start, its decoded length in bytes, whether
    /// it held an escape; the cursor ends past the closing quote.
    // Inlined into its three callers: a call here cost more than the scan of a short string.
    #[inline(always)]
    fn string_at(&mut self) -> Option<(usize, usize, bool)> {
        let start = self.i;
        self.i += 1;
        let mut len = 0;
        let mut escaped = false;
        loop {
            let run = self.i;
            // Eight bytes at a time up to the first that ends the run, handing a long run to
            // SIMD; byte by byte only in the text's last seven bytes.
            let mut words = 0;
            while let Some(w) = self.b[self.i..].first_chunk::<8>() {
                let found = ends_run(u64::from_le_bytes(*w));
                if found != 0 {
                    self.i += (found.trailing_zeros() / 8) as usize;
                    break;
                }
                self.i += 8;
                words += 1;
                if words == LONG_RUN_WORDS {
                    self.long_run()?;
                    break;
                }
            }
            while let Some(&b) = self.b.get(self.i) {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.i += 1;
            }
            len += self.i - run;
            match self.b.get(self.i)? {
                b'"' => {
                    self.i += 1;
                    return Some((start, len, escaped));
                }
                b'\\' => {
                    escaped = true;
                    len += self.escape()?;
                }
                // A raw control character: serde_json refuses it.
                _ => return None,
            }
        }
    }

    /// Past the rest of a long run of a string's plain bytes: to its first `"` or `\` (or the
    /// text's end), found with `memchr2` (SIMD), with no control byte before it (`None` if there
    /// is one: serde_json refuses a raw control character in a string).
    #[inline(never)]
    fn long_run(&mut self) -> Option<()> {
        let rest = &self.b[self.i..];
        let end = memchr::memchr2(b'"', b'\\', rest).unwrap_or(rest.len());
        if has_control(&rest[..end]) {
            return None;
        }
        self.i += end;
        Some(())
    }

    /// The escape at the cursor (on its `\`): its decoded length in bytes. A `\u` escape of
    /// half a surrogate pair is taken only as a whole pair.
    #[inline(never)]
    fn escape(&mut self) -> Option<usize> {
        self.i += 1;
        let e = *self.b.get(self.i)?;
        self.i += 1;
        match e {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(1),
            b'u' => {
                let cp = self.hex4()?;
                match cp {
                    0..=0x7f => Some(1),
                    0x80..=0x7ff => Some(2),
                    0xd800..=0xdbff => {
                        if !self.b[self.i..].starts_with(b"\\u") {
                            return None;
                        }
                        self.i += 2;
                        matches!(self.hex4()?, 0xdc00..=0xdfff).then_some(4)
                    }
                    0xdc00..=0xdfff => None,
                    _ => Some(3),
                }
            }
            _ => None,
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.b.get(self.i..self.i + 4)?;
        let mut v = 0;
        for d in digits {
            v = v * 16 + (*d as char).to_digit(16)?;
        }
        self.i += 4;
        Some(v)
    }
}

/// The compact length, as serde_json writes it, of a string's content (between its quotes)
/// that holds escapes, already checked by [`Cursor::string_at`]: `"` and `\` and the controls
/// with a short form take two bytes, other controls six (`\u00XX`), everything else its UTF-8.
fn compact_escaped(content: &[u8]) -> u64 {
    let mut len = 0;
    let mut i = 0;
    while i < content.len() {
        if content[i] != b'\\' {
            len += 1;
            i += 1;
            continue;
        }
        let e = content.get(i + 1).copied().unwrap_or(b'\\');
        i += 2;
        len += match e {
            b'/' => 1,
            b'u' => {
                let cp = content
                    .get(i..i + 4)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .unwrap_or(0);
                i += 4;
                match cp {
                    0x08 | 0x09 | 0x0a | 0x0c | 0x0d | 0x22 | 0x5c => 2,
                    0..=0x1f => 6,
                    0x20..=0x7f => 1,
                    0x80..=0x7ff => 2,
                    // A high surrogate: its low half (checked) follows; the pair is 4 bytes.
                    0xd800..=0xdbff => {
                        i += 6;
                        4
                    }
                    _ => 3,
                }
            }
            // `"`, `\` and b, f, n, r, t: written back as the same two bytes.
            _ => 2,
        };
    }
    len
}

#[cfg(test)]
mod tests;
