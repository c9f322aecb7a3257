//! `modelrelay requests KEY-OR-ID [--limit N]`, `requests --request ID`: a key's latest
//! requests, or one request, as the ledger has them — what an operator answers a customer's
//! question about a charge with (before this, only `sqlite3` read the ledger).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chrono::{DateTime, SecondsFormat};
use clap::Args;
use serde::Serialize;

use super::out::{fail, output, print_json};
use super::tables::field;
use crate::activity::client;
use crate::activity::protocol::{Request, Response};
use crate::money::Usd;
use crate::shop::usage::RecentRequest;
use crate::status::Measured;
use crate::store::UsageRow;

/// `requests …`
#[derive(Debug, Args)]
pub struct RequestsArgs {
    /// Key, key id or prefix: its latest requests, newest first.
    #[arg(required_unless_present = "request", conflicts_with = "request")]
    pub key: Option<String>,
    /// One request, by its id (the `x-request-id` header of its answer, `req_…`).
    #[arg(long, value_name = "REQUEST-ID")]
    pub request: Option<String>,
    /// How many of the key's latest requests (1 to 10000).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub limit: u32,
    /// Admin socket (default: from config).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Print one JSON document (an array; one object with --request).
    #[arg(long)]
    pub json: bool,
}

/// Run `requests` against the daemon at `path`.
pub(super) async fn requests(path: &Path, args: RequestsArgs) -> ExitCode {
    let one = args.request.is_some();
    let req = Request::Requests {
        key: args.key,
        request_id: args.request,
        limit: Some(super::ask_for(args.limit)),
    };
    match client::call(path, &req).await {
        Err(e) => fail(e),
        Ok(Response::Error { message }) => fail(message),
        Ok(Response::Requests { mut requests }) => {
            // Said on stderr when there were more, as `orders list` and `mail list` say it (a
            // script read a cut list as whole; found by an independent check).
            let cut = !one && super::cut_to(&mut requests, Some(args.limit), "requests");
            let views: Vec<RequestJson> = requests.iter().map(RequestJson::of).collect();
            match (args.json, one) {
                (true, true) => views
                    .first()
                    .map_or_else(|| fail("no such request"), print_json),
                (true, false) => print_json(&views),
                (false, true) => requests
                    .first()
                    .map_or_else(|| fail("no such request"), |r| output(&card(r))),
                (false, false) => output(&table(&requests, cut)),
            }
        }
        Ok(other) => fail(format_args!("unexpected answer from the daemon: {other:?}")),
    }
}

/// A ledger row in JSON: what the customer's `/api/usage` says of it (money as decimal strings
/// in USD, the time in RFC 3339, UTC), and what only the operator sees.
#[derive(Debug, Serialize)]
struct RequestJson {
    #[serde(flatten)]
    row: RecentRequest,
    key_id: String,
    status: u16,
    latency_ms: u64,
    ttft_ms: Option<u64>,
    account: String,
}

impl RequestJson {
    fn of(r: &UsageRow) -> RequestJson {
        RequestJson {
            key_id: r.key_id.clone(),
            status: r.status,
            latency_ms: r.latency_ms,
            ttft_ms: r.ttft_ms,
            account: r.account.clone(),
            row: RecentRequest::from(r.clone()),
        }
    }
}

fn time(ms: i64, format: SecondsFormat) -> String {
    DateTime::from_timestamp_millis(ms)
        .map_or_else(|| ms.to_string(), |t| t.to_rfc3339_opts(format, true))
}

/// A key's requests for people, newest first, with their sum.
/// The rows, and a last line with their count and sum — of these rows, not the key's whole
/// spend (`keys show` has that); `cut` when the key has more than were asked for.
fn table(rows: &[UsageRow], cut: bool) -> String {
    if rows.is_empty() {
        return "(no requests yet)\n".into();
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<20} {:<28} {:<9} {:<17} {:<3} {:<8} {:>9} {:>9} {:>7} {:>13} {:<9} {:>6} {:<16} {:>8}",
        "TIME (UTC)",
        "REQUEST",
        "API",
        "MODEL",
        "STR",
        "PERIOD",
        "HIT",
        "MISS",
        "OUT",
        "COST USD",
        "MEASURED",
        "STATUS",
        "FINISH",
        "MS"
    );
    let mut total = Usd::ZERO;
    for r in rows {
        total = total.saturating_add(r.cost);
        let _ = writeln!(
            s,
            "{:<20} {:<28} {:<9} {:<17} {:<3} {:<8} {:>9} {:>9} {:>7} {:>13} {:<9} {:>6} {:<16} {:>8}",
            time(r.created_at_ms, SecondsFormat::Secs)
                .trim_end_matches('Z')
                .replace('T', " "),
            field(&r.request_id),
            r.api.as_str(),
            field(&r.model),
            if r.stream { "yes" } else { "no" },
            r.period.as_str(),
            r.cache_hit_tokens,
            r.cache_miss_tokens,
            r.completion_tokens,
            r.cost,
            r.measured.as_str(),
            r.status,
            r.finish.as_str(),
            r.latency_ms
        );
    }
    let _ = writeln!(
        s,
        "\n{} request{} shown, ${total} for these (newest first{})",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" },
        if cut {
            "; the key has more: --limit N"
        } else {
            ""
        }
    );
    s
}

/// One request, every field.
fn card(r: &UsageRow) -> String {
    let mut s = String::new();
    let mut line = |k: &str, v: String| {
        let _ = writeln!(s, "{k:<18} {v}");
    };
    line("request", field(&r.request_id));
    line("key", field(&r.key_id));
    line("time", time(r.created_at_ms, SecondsFormat::Millis));
    line("api", r.api.as_str().into());
    line("model", field(&r.model));
    line("stream", if r.stream { "yes" } else { "no" }.into());
    line("period", r.period.as_str().into());
    line(
        "prompt tokens",
        format!(
            "{} ({} cache hit, {} cache miss)",
            r.prompt_tokens, r.cache_hit_tokens, r.cache_miss_tokens
        ),
    );
    line(
        "output tokens",
        format!("{} ({} reasoning)", r.completion_tokens, r.reasoning_tokens),
    );
    line("cost", format!("${}", r.cost));
    line("measured", r.measured.as_str().into());
    line("status", r.status.to_string());
    line("finish", r.finish.as_str().into());
    line("latency", format!("{} ms", r.latency_ms));
    line(
        "first token",
        r.ttft_ms.map_or_else(|| "-".into(), |t| format!("{t} ms")),
    );
    line(
        "account",
        if r.account.is_empty() && (r.measured != Measured::Estimated || r.status == 200) {
            // DeepSeek's counts, or an answer: it was reached, by a version from before
            // accounts were recorded (a database upgraded from it; found by an upgrade check).
            "- (not recorded: served by an older version)".into()
        } else if r.account.is_empty() {
            "- (never reached DeepSeek)".into()
        } else {
            field(&r.account)
        },
    );
    s
}
