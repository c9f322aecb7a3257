//! The customers' requests: a few tasks, each ticking at its share of the rate and sending one
//! request per tick in a task of its own — OpenAI and Anthropic, streamed or not, and
//! `count_tokens` — mostly on big keys, some on small keys that run dry. A share of them carry
//! a `[[sim …]]` directive that makes the simulated DeepSeek misbehave (a cut, an error event,
//! a stall, a body that is not JSON, a failure status), and a share are abandoned by the client
//! (mid-stream, or before any answer). How each answer is judged is in [`super::outcome`].

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::time::MissedTickBehavior;

use super::keys::{Pick, Tier};
use super::outcome;
use super::world::World;

/// The API a request goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// `POST /v1/chat/completions`.
    OpenAi,
    /// `POST /v1/messages` (or `/anthropic/v1/messages`).
    Anthropic,
    /// `POST /v1/messages/count_tokens`.
    CountTokens,
}

/// What a request asks of the simulated upstream, or how its client behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// A plain answer.
    Normal,
    /// Upstream sends no usage: the gateway must estimate.
    NoUsage,
    /// Upstream cuts the connection part-way (`drop_after`).
    Drop,
    /// Upstream sends an error event part-way (`error_after`).
    ErrorEvent,
    /// Upstream goes silent part-way (`stall_after`; the gateway's idle timeout is 3 s), or,
    /// not streamed, its first byte takes longer than that.
    Stall,
    /// Upstream answers with something that is not JSON (`garbage`).
    Garbage,
    /// Upstream answers 500, 503 or 429 on every account (`fail=`).
    Fail5xx,
    /// Upstream refuses the request itself with 422 (passed on to the client).
    Fail422,
    /// The client reads a few events of a stream and hangs up.
    AbortMidStream,
    /// The client gives up before any answer (upstream takes 1.5 s to start).
    AbortEarly,
}

impl Scenario {
    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Normal => "normal",
            Scenario::NoUsage => "upstream sends no usage",
            Scenario::Drop => "upstream cuts the connection",
            Scenario::ErrorEvent => "upstream error event mid-stream",
            Scenario::Stall => "upstream stalls (idle timeout)",
            Scenario::Garbage => "upstream sends non-JSON",
            Scenario::Fail5xx => "upstream 500/503/429 on every account",
            Scenario::Fail422 => "upstream 422 (the request's fault)",
            Scenario::AbortMidStream => "client hangs up mid-stream",
            Scenario::AbortEarly => "client hangs up before the answer",
        }
    }
}

/// Weights of the scenarios of chat and messages requests (out of 100).
const SCENARIOS: [(Scenario, u32); 10] = [
    (Scenario::Normal, 68),
    (Scenario::NoUsage, 3),
    (Scenario::Drop, 4),
    (Scenario::ErrorEvent, 4),
    (Scenario::Stall, 2),
    (Scenario::Garbage, 3),
    (Scenario::Fail5xx, 1),
    (Scenario::Fail422, 1),
    (Scenario::AbortMidStream, 9),
    (Scenario::AbortEarly, 5),
];

/// One request, decided before it is sent.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Which API.
    pub api: Api,
    /// Streamed.
    pub stream: bool,
    /// What upstream or the client does.
    pub scenario: Scenario,
    /// The key, as taken.
    pub key: Pick,
    /// Path under the gateway.
    pub path: &'static str,
    /// Anthropic requests: the key in `x-api-key` rather than as Bearer.
    pub x_api_key: bool,
    /// The JSON body.
    pub body: Value,
    /// A stream is abandoned after this many `data:` events.
    pub abort_after: Option<usize>,
    /// The client's whole-request timeout.
    pub timeout: Duration,
    /// Its row in the report.
    pub kind: &'static str,
}

/// The `[[sim …]]` directive for `scenario` (reply length and pace drawn here).
fn directive(rng: &mut StdRng, scenario: Scenario, stream: bool) -> String {
    let reply: u64 = rng.random_range(5..=30);
    let delay: u64 = if stream { rng.random_range(3..=12) } else { 0 };
    let part = rng.random_range(1..reply);
    let extra = match scenario {
        Scenario::Normal | Scenario::AbortMidStream => String::new(),
        Scenario::NoUsage => " no_usage=1".into(),
        Scenario::Drop => format!(" drop_after={part}"),
        Scenario::ErrorEvent => format!(" error_after={part}"),
        Scenario::Stall if stream => format!(" stall_after={part}"),
        Scenario::Stall => " first_delay_ms=4500".into(),
        Scenario::Garbage => " garbage=1".into(),
        Scenario::Fail5xx => format!(" fail={}", [500, 503, 429].choose(rng).unwrap_or(&500)),
        Scenario::Fail422 => " fail=422".into(),
        Scenario::AbortEarly => " first_delay_ms=1500".into(),
    };
    format!("[[sim reply={reply} delay_ms={delay}{extra}]]")
}

impl Plan {
    /// Draw a request: API, stream or not, key, scenario, body.
    pub fn draw(rng: &mut StdRng, world: &World) -> Option<Plan> {
        let roll = rng.random_range(0..100);
        let (api, stream, kind) = match roll {
            0..22 => (Api::OpenAi, false, "openai"),
            22..50 => (Api::OpenAi, true, "openai stream"),
            50..67 => (Api::Anthropic, false, "anthropic"),
            67..90 => (Api::Anthropic, true, "anthropic stream"),
            _ => (Api::CountTokens, false, "count_tokens"),
        };
        let tier = if rng.random_bool(0.15) {
            Tier::Small
        } else {
            Tier::Big
        };
        let key = world.keys.pick(tier, rng)?;
        let mut scenario = Scenario::Normal;
        if api != Api::CountTokens {
            let total: u32 = SCENARIOS.iter().map(|(_, w)| w).sum();
            let mut at = rng.random_range(0..total);
            for (s, w) in SCENARIOS {
                if at < w {
                    scenario = s;
                    break;
                }
                at -= w;
            }
            if scenario == Scenario::AbortMidStream && !stream {
                scenario = Scenario::AbortEarly;
            }
        }
        Some(Plan::build(rng, api, stream, scenario, key, kind))
    }

    /// The request for a drawn API, scenario and key.
    pub fn build(
        rng: &mut StdRng,
        api: Api,
        stream: bool,
        scenario: Scenario,
        key: Pick,
        kind: &'static str,
    ) -> Plan {
        // Only the pro plan (the big keys) has the pro model; a quarter of their requests use it.
        let pro = key.tier == Tier::Big && rng.random_bool(0.25);
        let n: u32 = rng.random();
        let text = format!(
            "{} Question {n}: in one short sentence, what is {} plus {}?",
            directive(rng, scenario, stream),
            n % 97,
            n % 89
        );
        let (path, body) = match api {
            Api::OpenAi => {
                let model = if pro {
                    "deepseek-v4-pro"
                } else {
                    "deepseek-v4-flash"
                };
                let body = json!({"model": model, "max_tokens": 64, "stream": stream,
                    "messages": [{"role": "system", "content": "You are terse."},
                                 {"role": "user", "content": text}]});
                ("/v1/chat/completions", body)
            }
            Api::Anthropic => {
                let model = if pro {
                    "claude-opus-4-1"
                } else {
                    "claude-sonnet-4-5"
                };
                let body = json!({"model": model, "max_tokens": 64, "stream": stream,
                    "system": "You are terse.",
                    "messages": [{"role": "user", "content": text}]});
                let path = if rng.random_bool(0.3) {
                    "/anthropic/v1/messages"
                } else {
                    "/v1/messages"
                };
                (path, body)
            }
            Api::CountTokens => {
                let body = json!({"model": "claude-sonnet-4-5",
                    "messages": [{"role": "user", "content": text}]});
                ("/v1/messages/count_tokens", body)
            }
        };
        let abort_after = (scenario == Scenario::AbortMidStream).then(|| rng.random_range(1..5));
        let timeout = if scenario == Scenario::AbortEarly {
            Duration::from_millis(300)
        } else {
            Duration::from_secs(60)
        };
        Plan {
            api,
            stream,
            scenario,
            key,
            path,
            x_api_key: rng.random_bool(0.5),
            body,
            abort_after,
            timeout,
            kind,
        }
    }

    /// Send it and count how it ended.
    pub async fn send(self, world: &World) {
        if self.api != Api::CountTokens {
            world.tally.scenario(self.scenario.name());
        }
        let mut req = world
            .http
            .post(format!("{}{}", world.base, self.path))
            .timeout(self.timeout)
            .json(&self.body);
        req = if self.api != Api::OpenAi && self.x_api_key {
            req.header("x-api-key", &self.key.text)
        } else {
            req.bearer_auth(&self.key.text)
        };
        if self.api != Api::OpenAi {
            req = req.header("anthropic-version", "2023-06-01");
        }
        let outcome = outcome::judge(world, &self, req.send().await).await;
        world.tally.request(self.kind, &outcome);
    }
}

/// One client: `rate` requests per second until the load stops, each in a task of its own
/// holding a permit of `permits` (a tick that finds none is counted and skipped).
pub async fn client(world: Arc<World>, rate: f64, seed: u64, permits: Arc<Semaphore>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.1)));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    while !world.stopping() {
        tokio::select! {
            _ = tick.tick() => {}
            () = stopped(&world) => break,
        }
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            world
                .tally
                .event("tick skipped: too many requests in flight");
            continue;
        };
        let Some(plan) = Plan::draw(&mut rng, &world) else {
            continue;
        };
        let world = world.clone();
        tokio::spawn(async move {
            plan.send(&world).await;
            drop(permit);
        });
    }
}

/// The `starter` key (30 requests a minute) sent one plain request a second: half are refused
/// with 429, and the refusals must not disturb anything else.
pub async fn limited_key(world: Arc<World>) {
    let mut rng = StdRng::seed_from_u64(7);
    while world.pause(Duration::from_secs(1)).await {
        let Some(key) = world.keys.pick(Tier::Limited, &mut rng) else {
            return;
        };
        let plan = Plan::build(
            &mut rng,
            Api::OpenAi,
            false,
            Scenario::Normal,
            key,
            "openai, starter key at 60/min",
        );
        plan.send(&world).await;
    }
}

/// Resolves once the load is told to stop.
async fn stopped(world: &World) {
    let mut stop = world.stop.clone();
    let _ = stop.wait_for(|s| *s).await;
}
