//! Text that people read: characters that change how text reads without showing.

/// Characters that change how text reads without showing, or show as nothing: Unicode's
/// default-ignorable code points (soft hyphen, zero-width and joiner characters, direction
/// marks and overrides, the combining grapheme joiner, Hangul fillers, variation selectors,
/// Mongolian and Khmer format characters, musical and shorthand format controls, tags), the
/// other format characters (Arabic number signs, interlinear annotation, Egyptian hieroglyph
/// format controls), line and paragraph separators, and the blank braille pattern: never in an
/// address we store, and never shown raw to an operator (one in a customer's email could make
/// the console or the CLI show text reversed, hidden, shifted or on a forged line, or make two
/// addresses look alike). Hand-listed from Unicode 16's DerivedCoreProperties
/// (`Default_Ignorable_Code_Point`) and general category `Cf`: no crate in our tree carries
/// them, and the list is small and stable.
pub fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{0600}'..='\u{0605}' | '\u{061C}' | '\u{06DD}' | '\u{070F}'
        | '\u{0890}'..='\u{0891}' | '\u{08E2}' | '\u{115F}'..='\u{1160}' | '\u{17B4}'..='\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{2800}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}'
        | '\u{FFA0}' | '\u{FFF0}'..='\u{FFFB}' | '\u{110BD}' | '\u{110CD}'
        | '\u{13430}'..='\u{1345F}' | '\u{1BCA0}'..='\u{1BCA3}' | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0000}'..='\u{E0FFF}')
        || is_blank_or_nonchar(c)
}

/// Noncharacters (U+FDD0–U+FDEF, and the last two code points of every plane), the object
/// replacement character and the symbols drawn as nothing (a musical null notehead, the Khitan
/// filler): a terminal draws no cell for some of them while the console counts one, which
/// shifted a row and left a stale cell beside it (found by an independent check).
fn is_blank_or_nonchar(c: char) -> bool {
    let n = u32::from(c);
    matches!(n, 0xFDD0..=0xFDEF | 0xFFFC | 0x1D159 | 0x16FE4) || n & 0xFFFE == 0xFFFE
}

/// `s` with its invisible characters (and control characters) shown as `�`, for a terminal.
pub fn visible(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() || is_invisible(c) {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect()
}

/// At most `max` characters of `s` (then `…`): what an error message repeats of someone's
/// input, which may be a megabyte.
pub fn clipped(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &s[..cut]).into(),
        None => s.into(),
    }
}

/// The longest start of `s` that fits in `cells` terminal cells, and the cells it takes (a
/// CJK or emoji character takes two): for columns cut by what a terminal shows, not by
/// characters.
pub fn fitting(s: &str, cells: usize) -> (&str, usize) {
    use unicode_width::UnicodeWidthChar;
    let mut used = 0;
    for (i, c) in s.char_indices() {
        let w = c.width().unwrap_or(0);
        if used + w > cells {
            return (&s[..i], used);
        }
        used += w;
    }
    (s, used)
}

/// Most characters of someone's input an error message repeats.
pub const ECHOED: usize = 100;

/// [`clipped`] to [`ECHOED`] characters.
pub fn echoed(s: &str) -> std::borrow::Cow<'_, str> {
    clipped(s, ECHOED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_are_clipped_at_a_character_boundary() {
        assert_eq!(clipped("abc", 3), "abc");
        assert_eq!(clipped("abcd", 3), "abc…");
        assert_eq!(clipped("ééé", 2), "éé…");
        assert_eq!(echoed(&"x".repeat(10_000)).chars().count(), ECHOED + 1);
    }

    #[test]
    fn default_ignorable_and_format_characters_are_invisible() {
        // Each one an independent check got through checkout into the console and the CLI.
        for c in [
            '\u{034F}',
            '\u{3164}',
            '\u{115F}',
            '\u{1160}',
            '\u{FFA0}',
            '\u{FE0F}',
            '\u{180B}',
            '\u{17B4}',
            '\u{1D173}',
            '\u{1BCA0}',
            '\u{13430}',
            '\u{0600}',
            '\u{2800}',
            '\u{E0100}',
            '\u{FDD0}',
            '\u{FFFF}',
            '\u{1FFFE}',
            '\u{FFFC}',
            '\u{1D159}',
            '\u{16FE4}',
        ] {
            assert!(is_invisible(c), "U+{:04X}", c as u32);
            assert_eq!(visible(&format!("a{c}b")), "a\u{FFFD}b");
        }
        for c in ['a', 'é', '名', '@', '\u{0301}', '\u{FF20}', '😀'] {
            assert!(!is_invisible(c), "U+{:04X}", c as u32);
        }
    }

    #[test]
    fn fitting_counts_cells() {
        assert_eq!(fitting("abc", 2), ("ab", 2));
        assert_eq!(fitting("名字x", 3), ("名", 2));
        assert_eq!(fitting("名字x", 5), ("名字x", 5));
        assert_eq!(fitting("", 3), ("", 0));
    }

    #[test]
    fn invisible_and_control_characters_are_shown() {
        assert_eq!(
            visible("a\u{202e}b\u{200b}c\u{1b}[2J"),
            "a\u{FFFD}b\u{FFFD}c\u{FFFD}[2J"
        );
        assert_eq!(visible("名@例子.中国"), "名@例子.中国");
    }
}
