//! Reading on after the client left: for the usage DeepSeek may already be sending, and on the
//! Anthropic route for the opening that reports the prompt's counts.

use super::{OPENING_WAIT, Relay, USAGE_GRACE};
use crate::gateway::dialect::{Step, StreamRewrite};
use crate::upstream::is_data_event;
use crate::upstream::sse::SseItem;

impl<S: StreamRewrite> Relay<S> {
    /// The client left before upstream's usage came: read on for at most [`USAGE_GRACE`],
    /// relaying nothing, until the usage or the stream's end. DeepSeek's OpenAI stream reports
    /// the prompt only in its last chunk, so a client that reads every token of a capped
    /// answer and hangs up before that chunk would otherwise pay for its prompt by our
    /// estimate, which text dense in tokens (digits, rare characters) beats by up to four
    /// times. When the usage does not come, the output estimated counts the deltas read
    /// meanwhile too: DeepSeek generated them and bills them (SPEC §4: "output from the deltas
    /// received"). Counting only what was relayed let a client that stopped reading pay a
    /// fraction of what it made DeepSeek write (found by an independent check).
    pub(super) async fn read_usage(&mut self) {
        self.read_on().await;
    }

    /// [`Relay::read_usage`]'s reading. A stream whose opening reports the prompt's counts
    /// (Anthropic's `message_start`) and whose client left before it came — while DeepSeek
    /// still queued the request or read its prompt, only keep-alives relayed: a coding agent's
    /// Esc — is read on until that opening (for at most [`OPENING_WAIT`], and not once the
    /// daemon begins to stop), then for the grace: its prompt is billed at DeepSeek's count,
    /// cache hits included, not at our estimate of it as cache misses, which cost ~34 times
    /// more on an agent's long cached conversation (found by an independent check). DeepSeek
    /// reads the prompt, and bills it, whether or not the client waits.
    async fn read_on(&mut self) {
        let now = tokio::time::Instant::now();
        // Waiting for the opening ends with it, whether or not it carries counts (one without
        // them must not keep the relay reading, and billing, the answer nobody reads; found by
        // an independent re-check), and at most after OPENING_WAIT: the key's place and hold
        // stay taken meanwhile.
        let mut opening = self.rewrite.prompt_at_opening() && !self.opened;
        let mut until = if opening {
            self.deadline
                .min(now + self.state.upstream.idle_timeout.min(OPENING_WAIT))
                .max(now + USAGE_GRACE)
        } else {
            now + USAGE_GRACE
        };
        // At the deadline, the read goes on for the grace all the same.
        self.events.read_until(until);
        // A stop does not wait for a client that is gone (it delayed the drain).
        let stopping = self.state.stopping.clone();
        while self.tally.usage.is_none() {
            let next = tokio::select! {
                biased;
                _ = &mut self.cut => return,
                () = stopping.cancelled() => return,
                r = tokio::time::timeout_at(until, self.events.next()) => r,
            };
            match next {
                Ok(Ok(Some(SseItem::Event(ev)))) => {
                    if !matches!(
                        self.rewrite.event(&ev, &mut self.tally),
                        Ok(Step::Send(_) | Step::Skip)
                    ) {
                        return;
                    }
                    if opening && is_data_event(&ev) {
                        opening = false;
                        self.opened = true;
                        until = until.min(tokio::time::Instant::now() + USAGE_GRACE);
                    }
                }
                Ok(Ok(Some(SseItem::Comment(_)))) => {}
                // The grace is over, upstream ended or broke: bill what is known.
                _ => return,
            }
        }
    }
}
