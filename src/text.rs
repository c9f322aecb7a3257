//! Text that people read: characters that change how text reads without showing.

/// Zero-width characters and direction overrides (U+200B–U+200F, U+202A–U+202E,
/// U+2060–U+2069, U+FEFF): never in an address we store, and never shown raw to an operator
/// (one in a customer's email could make the console or the CLI show text reversed or hidden).
pub fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invisible_and_control_characters_are_shown() {
        assert_eq!(
            visible("a\u{202e}b\u{200b}c\u{1b}[2J"),
            "a\u{FFFD}b\u{FFFD}c\u{FFFD}[2J"
        );
        assert_eq!(visible("名@例子.中国"), "名@例子.中国");
    }
}
