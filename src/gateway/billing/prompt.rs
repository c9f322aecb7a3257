//! A request's prompt counted again when DeepSeek never reported it (a stream cut before its
//! usage came): by DeepSeek's own tokenizer ([`crate::gateway::tokens`]), with the part a
//! recent prompt of the key began with taken as DeepSeek's cache hits
//! ([`crate::keys::prompts`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use bytes::Bytes;

use crate::gateway::dialect::PromptPieces;
use crate::gateway::pieces::Piece;
use crate::gateway::tokens;
use crate::keys::KeyState;
use crate::keys::prompts::{Scope, Turn};

/// DeepSeek's prefix cache works in units of 64 tokens: a prefix shorter than a unit, and the
/// part of one past its last whole unit, are read as misses.
const CACHE_UNIT: u64 = 64;

/// A request's body and its dialect's reading of the prompt's texts in it
/// ([`crate::gateway::dialect::Dialect::prompt_pieces`]).
pub struct PromptSource {
    /// The body as the client sent it.
    pub raw: Bytes,
    /// The texts of its prompt, and its number of messages.
    pub pieces: PiecesOf,
}

/// A dialect's reading of a body's prompt
/// ([`crate::gateway::dialect::Dialect::prompt_pieces`]).
pub type PiecesOf = for<'a> fn(&'a [u8]) -> Option<PromptPieces<'a>>;

/// Longest a bill waits for its prompt's count (counts run one a core at a time): past it, the
/// estimate from the prompt's bytes is billed.
const COUNT_WAIT: Duration = Duration::from_secs(30);

/// Counts running at once, at most: one a core. Each takes a core for a second or two a MiB,
/// and memory for its encoding; unbounded, a customer's burst of cut streams of large prompts
/// took every core and gigabytes (found by a review).
fn counting() -> &'static Semaphore {
    static COUNTING: OnceLock<Semaphore> = OnceLock::new();
    COUNTING.get_or_init(|| {
        Semaphore::new(std::thread::available_parallelism().map_or(1, std::num::NonZero::get))
    })
}

impl PromptSource {
    /// The prompt's tokens as DeepSeek counts them (with the estimate's few tokens of template
    /// a message), as (cache hits, misses), for a request in `scope` that started at `started`;
    /// `None` if it cannot be counted within [`COUNT_WAIT`]. CPU work: on a blocking thread.
    pub async fn count(
        &self,
        key: &Arc<KeyState>,
        scope: Scope,
        started: Instant,
    ) -> Option<(u64, u64)> {
        let (raw, pieces, key) = (self.raw.clone(), self.pieces, key.clone());
        let counted = async {
            let _turn = counting().acquire().await.ok()?;
            tokio::task::spawn_blocking(move || {
                let prompt = pieces(&raw)?;
                let counts = prompt
                    .pieces
                    .iter()
                    .map(|p| tokens::count(&p.text.text()?))
                    .collect::<Option<Vec<u64>>>()?;
                let prints = fingerprints(&key, &prompt)?;
                let shared = key
                    .prompts
                    .shared_prefix(&scope, started, &prints, prompt.last_user);
                let template = 4 * prompt.messages + 2;
                let total = counts.iter().sum::<u64>().saturating_add(template);
                // The template's tokens of a message whose every piece was cached are cached
                // too (found by an independent re-check: a resent conversation of many short
                // messages was billed their template's tokens as misses).
                let cached = counts[..shared].iter().sum::<u64>()
                    + TEMPLATE_PER_MESSAGE * whole_messages(&prompt.pieces, shared);
                let hit = (cached / CACHE_UNIT * CACHE_UNIT).min(total);
                Some((hit, total - hit))
            })
            .await
            .ok()
            .flatten()
        };
        tokio::time::timeout(COUNT_WAIT, counted)
            .await
            .ok()
            .flatten()
    }

    /// Remember this prompt with the key, in the background (DeepSeek read it, so it may have
    /// cached it for the key's next one): on one thread of its own, behind a queue bounded
    /// in prompts and in bytes — not a task on the blocking pool for every stream that ends,
    /// which thousands of streams ending at once would make as many threads; a prompt the
    /// queue cannot take is not remembered (its key's next cut stream is billed as misses).
    pub fn remember(&self, key: &Arc<KeyState>, scope: Scope, read_at: Instant) {
        let Some(queue) = recorder() else {
            return;
        };
        let size = self.raw.len();
        if QUEUED_BYTES.fetch_add(size, Ordering::Relaxed) + size > RECORDER_BYTES {
            QUEUED_BYTES.fetch_sub(size, Ordering::Relaxed);
            tracing::debug!("the prompt recorder is behind; a prompt is not remembered");
            return;
        }
        let job = Remember {
            raw: self.raw.clone(),
            pieces: self.pieces,
            key: key.clone(),
            scope,
            read_at,
        };
        if queue.try_send(job).is_err() {
            QUEUED_BYTES.fetch_sub(size, Ordering::Relaxed);
            tracing::debug!("the prompt recorder is behind; a prompt is not remembered");
        }
    }
}

/// The template's tokens a message, as the estimate counts them (`4 × messages + 2`).
const TEMPLATE_PER_MESSAGE: u64 = 4;

/// Messages all of whose pieces are among the first `shared` (a message without pieces is
/// not one: nothing says a recent prompt had it).
fn whole_messages(pieces: &[Piece], shared: usize) -> u64 {
    let open = pieces.get(shared).and_then(|p| p.message);
    let (mut last, mut whole) = (None, 0);
    for m in pieces[..shared.min(pieces.len())]
        .iter()
        .filter_map(|p| p.message)
    {
        if last != Some(m) && open != Some(m) {
            whole += 1;
        }
        last = Some(m);
    }
    whole
}

/// Prompts waiting to be remembered, at most.
const RECORDER_QUEUE: usize = 1024;
/// Bytes of bodies waiting to be remembered, at most: the queue keeps them in memory.
const RECORDER_BYTES: usize = 64 * 1024 * 1024;

/// Bytes of the bodies in the queue.
static QUEUED_BYTES: AtomicUsize = AtomicUsize::new(0);

/// One prompt to remember.
struct Remember {
    raw: Bytes,
    pieces: PiecesOf,
    key: Arc<KeyState>,
    scope: Scope,
    read_at: Instant,
}

impl Remember {
    fn run(self) {
        let prompt = (self.pieces)(&self.raw);
        QUEUED_BYTES.fetch_sub(self.raw.len(), Ordering::Relaxed);
        if let Some(p) = prompt
            && let Some(prints) = fingerprints(&self.key, &p)
        {
            let turn = Turn {
                message: p.last_user,
                end: p.turn_end(),
            };
            self.key
                .prompts
                .remember(self.scope, self.read_at, prints, turn);
        }
    }
}

/// Each piece's fingerprint, for `key`'s prompts.
fn fingerprints(key: &KeyState, prompt: &PromptPieces) -> Option<Vec<u64>> {
    prompt
        .pieces
        .iter()
        .map(|p| key.prompts.fingerprint(&p.label, |h| p.text.feed(h)))
        .collect()
}

static RECORDER: OnceLock<Option<SyncSender<Remember>>> = OnceLock::new();

/// The queue of the thread that remembers prompts, started at the first use; `None` if the
/// thread could not be started (logged once; nothing is remembered).
fn recorder() -> Option<&'static SyncSender<Remember>> {
    RECORDER
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Remember>(RECORDER_QUEUE);
            let started = std::thread::Builder::new()
                .name("prompt-recorder".into())
                .spawn(move || {
                    // Nothing waits for it, and its walk of an agent's large body would
                    // otherwise delay the answers sharing the core.
                    crate::background::yield_core_to_answers("prompt recorder");
                    rx.into_iter().for_each(Remember::run)
                });
            match started {
                Ok(_) => Some(tx),
                Err(e) => {
                    tracing::error!(error = %e, "the prompt recorder did not start");
                    None
                }
            }
        })
        .as_ref()
}

#[cfg(test)]
mod tests {
    use crate::gateway::anthropic::Anthropic;
    use crate::gateway::dialect::Dialect;
    use crate::gateway::openai::OpenAi;
    use crate::gateway::pieces::PieceText;

    /// The recorder's walk of a finished stream's body gives the core to answers first.
    #[test]
    fn the_prompt_recorder_runs_at_the_lowest_priority() {
        assert!(super::recorder().is_some());
        let nice = crate::background::nice_of_threads("prompt-recorder");
        assert_eq!(nice, [19], "the recorder thread's nice");
    }

    /// Only messages whose every piece is cached count: not the one the first new piece is
    /// in, nor the tools or the system prompt, nor a message without pieces.
    #[test]
    fn whole_messages_are_those_all_of_whose_pieces_are_cached() {
        use super::{Piece, whole_messages};
        use crate::gateway::pieces::PieceText;
        let at = |m: Option<u64>| Piece {
            label: String::new(),
            message: m,
            text: PieceText::Decoded(String::new()),
        };
        let p = [None, Some(0), Some(0), Some(2), Some(3), Some(3)].map(at);
        let whole: Vec<u64> = (0..=p.len()).map(|s| whole_messages(&p, s)).collect();
        assert_eq!(whole, [0, 0, 0, 1, 2, 2, 3]);
    }

    /// (label, text) of each piece of text (not what else a message or block says).
    fn labelled<D: Dialect>(body: serde_json::Value) -> Vec<(String, String)> {
        let raw = body.to_string();
        let p = D::prompt_pieces(raw.as_bytes()).unwrap();
        p.pieces
            .into_iter()
            .filter(|p| !matches!(p.text, PieceText::Other(_)))
            .map(|p| (p.label, p.text.text().unwrap().into_owned()))
            .collect()
    }

    /// Each piece's fingerprint, by one key's prompts (each key's are keyed at random).
    fn prints<D: Dialect>(body: serde_json::Value) -> Vec<u64> {
        use std::sync::LazyLock;
        static KEY: LazyLock<crate::keys::prompts::RecentPrompts> = LazyLock::new(Default::default);
        let raw = body.to_string();
        let p = D::prompt_pieces(raw.as_bytes()).unwrap();
        let key = &*KEY;
        p.pieces
            .iter()
            .map(|p| key.fingerprint(&p.label, |h| p.text.feed(h)).unwrap())
            .collect()
    }

    /// A message without text, an image, a tool use's id are pieces too: when they change,
    /// what comes after them is not the same prompt (they left no trace, found by an
    /// independent re-check); a cache mark that moved is the same prompt.
    #[test]
    fn what_else_a_message_or_block_says_is_a_piece() {
        let empty = |role: &str, content: serde_json::Value| {
            serde_json::json!({"messages": [{"role": "user", "content": "A"},
                {"role": role, "content": content}, {"role": "user", "content": "B"}]})
        };
        for content in [serde_json::Value::Null, serde_json::json!([])] {
            let (a, b) = (
                prints::<OpenAi>(empty("assistant", content.clone())),
                prints::<OpenAi>(empty("user", content.clone())),
            );
            assert_eq!(a.len(), b.len());
            assert_ne!(a[3], b[3], "{content}");
            let (a, b) = (
                prints::<Anthropic>(empty("assistant", serde_json::json!([]))),
                prints::<Anthropic>(empty("user", serde_json::json!([]))),
            );
            assert_ne!(a[3], b[3]);
        }
        let image = |data: &str, mark: bool| {
            let mut text = serde_json::json!({"type": "text", "text": "T"});
            if mark {
                text["cache_control"] = serde_json::json!({"type": "ephemeral"});
            }
            prints::<Anthropic>(
                serde_json::json!({"messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "data": data}}, text]}]}),
            )
        };
        let a = image("AAAA", false);
        assert_ne!(a[2], image("BBBB", false)[2], "another image");
        assert_eq!(a, image("AAAA", true), "a cache mark is not the prompt");
        let call = |id: &str| {
            prints::<Anthropic>(
                serde_json::json!({"messages": [{"role": "assistant", "content": [
                {"type": "tool_use", "id": id, "name": "f", "input": {}}]}]}),
            )
        };
        assert_ne!(call("t1")[2], call("t2")[2]);
        let part = |kind: &str| {
            prints::<OpenAi>(
                serde_json::json!({"messages": [{"role": "user", "content": [
                {"type": kind, "text": "T"}]}]}),
            )
        };
        assert_ne!(part("text")[2], part("image_url")[2]);
        // What frames the prompt comes first: the same messages with a response format added
        // share nothing.
        let framed = |extra: serde_json::Value| {
            let mut body = serde_json::json!({"messages": [{"role": "user", "content": "A"}]});
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            prints::<OpenAi>(body)
        };
        let json_mode = serde_json::json!({"response_format": {"type": "json_object"}});
        assert_ne!(framed(serde_json::json!({}))[0], framed(json_mode)[0]);
        let max = serde_json::json!({"reasoning_effort": "max"});
        assert_ne!(framed(serde_json::json!({}))[0], framed(max)[0]);
        // A developer's message is a user's turn, as to DeepSeek's template.
        let raw = serde_json::json!({"messages": [{"role": "user", "content": "Q"},
            {"role": "assistant", "content": "A"}, {"role": "developer", "content": "D"}]})
        .to_string();
        let p = OpenAi::prompt_pieces(raw.as_bytes()).unwrap();
        assert_eq!(p.last_user, Some(2));
    }

    /// The same texts in other messages, roles or kinds of block are other pieces: DeepSeek's
    /// template, and so its cache, sees another prompt. The same start keeps its pieces.
    #[test]
    fn pieces_say_where_their_text_stands() {
        let parts = labelled::<OpenAi>(serde_json::json!({"messages": [
            {"role": "user", "content": [{"type": "text", "text": "B"}, {"type": "text", "text": "C"}]}]}));
        let messages = labelled::<OpenAi>(serde_json::json!({"messages": [
            {"role": "user", "content": "B"}, {"role": "user", "content": "C"}]}));
        assert_eq!(parts[0], messages[0]);
        assert_ne!(parts[1], messages[1]);
        // An assistant's reasoning before its answer, as DeepSeek's template writes them:
        // a changed reasoning leaves the answer after it uncached.
        let turn = labelled::<OpenAi>(serde_json::json!({"messages": [{"role": "assistant",
            "tool_calls": [], "content": "C", "reasoning_content": "R", "name": "N"}]}));
        let order: Vec<&str> = turn.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(
            order,
            [
                "0:assistant.name",
                "0:assistant.reasoning_content",
                "0:assistant.content",
                "0:assistant.tool_calls"
            ]
        );
        let as_system = labelled::<OpenAi>(serde_json::json!({"messages": [
            {"role": "system", "content": "B"}]}));
        assert_ne!(as_system[0], messages[0]);

        let text = labelled::<Anthropic>(serde_json::json!({"system": "S", "messages": [
            {"role": "user", "content": [{"type": "text", "text": "D"}, {"type": "text", "text": "E"}]}]}));
        let result = labelled::<Anthropic>(serde_json::json!({"system": "S", "messages": [
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "D"},
                {"type": "text", "text": "E"}]}]}));
        assert_eq!(text[0], result[0], "the system prompt");
        assert_ne!(text[1], result[1], "a tool's result is not a text");
        // The tools after the system prompt, where the template writes them.
        let tools = serde_json::json!([{"type": "function", "function": {"name": "f"}}]);
        let with_system = labelled::<OpenAi>(serde_json::json!({"tools": tools, "messages": [
            {"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]}));
        let order: Vec<&str> = with_system.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(order, ["0:system.content", "tools", "1:user.content"]);
        let without = labelled::<OpenAi>(serde_json::json!({"tools": tools, "messages": [
            {"role": "user", "content": "Q"}]}));
        assert_eq!(without[0].0, "tools");
        let system = labelled::<Anthropic>(serde_json::json!({"tools": tools, "system": "S",
            "messages": [{"role": "user", "content": "Q"}]}));
        let order: Vec<&str> = system.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(order, ["system.text", "tools", "0:user.text"]);
        // Thinking before the rest of its turn, whatever the blocks' order.
        let turn = labelled::<Anthropic>(serde_json::json!({"messages": [{"role": "assistant",
            "content": [{"type": "text", "text": "C"}, {"type": "thinking", "thinking": "R"},
                {"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]}));
        let order: Vec<&str> = turn.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(order, ["R", "C", "f", "{}"]);
        let plain = labelled::<Anthropic>(serde_json::json!({"system": "S", "messages": [
            {"role": "user", "content": "D"}]}));
        assert_eq!(plain[1], text[1], "a string is a text block");
    }
}
