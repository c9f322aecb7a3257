//! Text that people read: characters that change how text reads without showing.

/// Zero-width, direction, line-separating and tag characters (U+00AD, U+061C, U+180E,
/// U+200B–U+200F, U+2028–U+202E, U+2060–U+206F, U+FEFF, U+FFF9–U+FFFB, U+E0000–U+E007F):
/// never in an address we store, and never shown raw to an operator (one in a customer's email
/// could make the console or the CLI show text reversed, hidden or on a forged line).
pub fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}' | '\u{E0000}'..='\u{E007F}')
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
    fn invisible_and_control_characters_are_shown() {
        assert_eq!(
            visible("a\u{202e}b\u{200b}c\u{1b}[2J"),
            "a\u{FFFD}b\u{FFFD}c\u{FFFD}[2J"
        );
        assert_eq!(visible("名@例子.中国"), "名@例子.中国");
    }
}
