//! A walk over JSON text for the quick readings (`chunk/scan.rs`, `request/view.rs`): objects
//! member by member, arrays element by element, any value checked and passed over, strings
//! measured as decoded — without building anything.
//!
//! Hand-written, and why: serde_json's `MapAccess` path was most of the chunk view's ~7k
//! instructions per streamed chunk under callgrind (bench/PROFILE.md). Every method answers
//! `None` where the text is not JSON or not JSON it is sure to read as serde_json does (an
//! escaped key, a `\u` escape that is not a whole character, nesting deeper than
//! [`MAX_DEPTH`]); its callers then let serde read the text. It validates what it passes over
//! as serde_json would: strings without raw control characters and with valid escapes,
//! numbers by JSON's grammar, `true`/`false`/`null`.

/// Deeper nesting is left to serde (its own limit is 128).
const MAX_DEPTH: u32 = 64;

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

/// The walk over the text; every method answers `None` where the text is not JSON, or not
/// JSON this scanner is sure to read as serde does.
pub(super) struct Cursor<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
    depth: u32,
}

impl<'a> Cursor<'a> {
    /// A walk from the start of `s`.
    pub(super) fn new(s: &'a str) -> Cursor<'a> {
        Cursor {
            s,
            b: s.as_bytes(),
            i: 0,
            depth: 0,
        }
    }

    /// Only whitespace is left.
    pub(super) fn at_end(&mut self) -> bool {
        self.ws();
        self.i == self.b.len()
    }

    /// The next value's text (as serde's `RawValue` has it: from its first byte to its last).
    pub(super) fn raw_value(&mut self) -> Option<&'a str> {
        self.ws();
        let start = self.i;
        self.skip_value()?;
        Some(&self.s[start..self.i])
    }

    /// JSON's whitespace (serde_json's: space, LF, CR, tab).
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.i += 1)
    }

    /// `null` next (after whitespace): consumed, `true`.
    pub(super) fn null(&mut self) -> bool {
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
    pub(super) fn members(
        &mut self,
        mut f: impl FnMut(&mut Self, &'a str) -> Option<()>,
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
                if escaped {
                    return None;
                }
                let key = &self.s[start + 1..self.i - 1];
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
    pub(super) fn elements(&mut self, mut f: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
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

    /// Any value, checked and passed over.
    pub(super) fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'{' => self.members(|c, _| c.skip_value()),
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
    pub(super) fn compact_len(&mut self) -> Option<u64> {
        match self.peek()? {
            b'{' => {
                let mut keys: [&str; 32] = [""; 32];
                let (mut n, mut len) = (0, 1u64);
                self.members(|c, key| {
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

    /// JSON's number grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self) -> Option<()> {
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        match self.b.get(self.i)? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
            if let Some(b'+' | b'-') = self.b.get(self.i) {
                self.i += 1;
            }
            self.some_digits()?;
        }
        Some(())
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
    pub(super) fn text(&mut self) -> Option<usize> {
        if self.peek()? != b'"' {
            return None;
        }
        self.string_at().map(|(_, len, _)| len)
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
            // Eight bytes at a time up to the first that ends the run; byte by byte only in the
            // text's last seven bytes.
            while let Some(w) = self.b[self.i..].first_chunk::<8>() {
                let found = ends_run(u64::from_le_bytes(*w));
                if found != 0 {
                    self.i += (found.trailing_zeros() / 8) as usize;
                    break;
                }
                self.i += 8;
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
mod tests {
    use super::ends_run;

    fn ends(b: u8) -> bool {
        b == b'"' || b == b'\\' || b < 0x20
    }

    /// Every pair of byte values at several pairs of places in a word: the word test finds the
    /// first byte a byte-by-byte test would (one it missed would skip a string's end).
    #[test]
    fn the_word_test_is_the_byte_test() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                for (p, q) in [(0, 7), (3, 4), (7, 0), (5, 5)] {
                    let mut w = [b'a'; 8];
                    w[p] = a;
                    w[q] = b;
                    let first = w.iter().position(|&c| ends(c));
                    let found = ends_run(u64::from_le_bytes(w));
                    let got = (found != 0).then(|| (found.trailing_zeros() / 8) as usize);
                    assert_eq!(got, first, "{w:?}");
                }
            }
        }
    }
}
