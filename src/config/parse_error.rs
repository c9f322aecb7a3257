//! Figment's parse errors in the operator's words: the key as written in the file (or the
//! environment variable's name), what was expected in plain terms, every error rather than the
//! first — instead of figment's own text, which names the profile (`default.`), Rust types
//! (`usize`) and nests backticks.

use figment::error::{Actual, Kind};
use figment::{Error, Source};

use super::ENV_PREFIX;

/// Every error `e` holds, one per line.
pub(super) fn describe(e: &Error) -> String {
    // TOML's syntax errors end with a line break of their own (a blank line before the prompt).
    let lines: Vec<String> = e
        .clone()
        .into_iter()
        .map(|e| one(&e).trim_end().to_string())
        .collect();
    let text = match lines.as_slice() {
        [one] => one.clone(),
        _ => format!("invalid configuration:\n  - {}", lines.join("\n  - ")),
    };
    scrub(&text)
}

/// `text` without the secrets it may quote: TOML's syntax errors show the line they are on
/// (`2 | api_key = "sk-…`), and a value that did not parse is quoted whole (an accounts list in
/// an environment variable) — said at every start, into the journal (found by an independent
/// check). What follows a secret's key on its line goes, and any `sk-…` word; a quoted line
/// that is no `key = value` nor a `[table]` (the inside of a multi-line string or list: a
/// secret's own line, with its key lines above) is not shown.
fn scrub(text: &str) -> String {
    const SECRET_KEYS: [&str; 3] = ["api_key", "client_secret", "smtp_url"];
    let mut out = Vec::new();
    for line in text.split('\n') {
        // TOML's quoted source lines: `12 | text`.
        if let Some((number, source)) = line.split_once(" | ")
            && !number.trim().is_empty()
            && number.trim().chars().all(|c| c.is_ascii_digit())
            && !source.contains('=')
            && !source.trim_start().starts_with('[')
            && !source.trim().is_empty()
        {
            out.push(format!("{number} | [line not shown: it may hold a secret]"));
            continue;
        }
        let lower = line.to_ascii_lowercase();
        let cut = SECRET_KEYS.iter().find_map(|k| {
            let at = lower.find(k)?;
            let rest = &lower[at + k.len()..];
            // `api_key =` or `api_key=\"`, not `api_key_file` (a path, not a secret).
            let gap = rest.len() - rest.trim_start_matches([' ', '\t', '\\', '"', '\'']).len();
            rest[gap..]
                .starts_with('=')
                .then_some(at + k.len() + gap + 1)
        });
        let line = match cut {
            Some(at) => format!("{} [not shown: a secret]", &line[..at]),
            None => line.to_string(),
        };
        out.push(
            line.split(' ')
                .map(|w| match w.find("sk-") {
                    Some(at) if w.len() - at >= 11 => format!("{}[redacted]", &w[..at]),
                    _ => w.to_string(),
                })
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    out.join("\n")
}

fn one(e: &Error) -> String {
    let from_env = e
        .metadata
        .as_ref()
        .is_some_and(|m| m.name.contains(ENV_PREFIX));
    let key = if from_env {
        format!("{ENV_PREFIX}{}", e.path.join("__").to_uppercase())
    } else {
        e.path.join(".")
    };
    let file = e.metadata.as_ref().and_then(|m| match &m.source {
        Some(Source::File(p)) => Some(p.display().to_string()),
        _ => None,
    });
    let what = match &e.kind {
        Kind::UnknownField(name, expected) => {
            let known = if expected.is_empty() {
                String::new()
            } else {
                format!(" (known here: {})", expected.join(", "))
            };
            return match file {
                Some(f) => format!("{f}: unknown key {}{known}", shown(&key, name)),
                None => format!("unknown key {}{known}", shown(&key, name)),
            };
        }
        Kind::UnknownVariant(value, expected) => {
            format!("{value:?} is not one of: {}", expected.join(", "))
        }
        // A secret's value is never shown, even one that did not parse (digits only, in an
        // environment variable, read as a number).
        Kind::InvalidType(_, expected) | Kind::InvalidValue(_, expected) if is_secret(&e.path) => {
            format!(
                "expected {} (not shown: it is a secret; one of digits alone is read as a \
                 number here, so put it in the matching *_file)",
                plain(expected)
            )
        }
        // TOML's dates and times come through figment as tables: `off_peak_dates =
        // [2026-12-25]` said "found a table" (found by an independent check).
        Kind::InvalidType(Actual::Map, expected) if expected.contains("string") => {
            format!(
                "expected {}, found a table (a date or time written without quotes is read as \
                 one: put it in quotes, as in \"2026-12-25\")",
                plain(expected)
            )
        }
        // An environment variable's value is read as TOML reads one: digits alone, or
        // true/false, are a number or a boolean, and a text setting refused them without a word
        // of how to write them (found by a newcomer's check).
        Kind::InvalidType(
            actual @ (Actual::Bool(_) | Actual::Unsigned(_) | Actual::Signed(_) | Actual::Float(_)),
            expected,
        ) if from_env && expected.contains("string") => {
            // Inside a list or table given whole in one variable (`…ACCOUNTS='[{name=1}]'`),
            // there is no variable of its own to quote: the hint named one that does not work
            // (`MODELRELAY_UPSTREAM__ACCOUNTS__0__NAME`); the text is quoted inside the value.
            let hint = match e
                .path
                .iter()
                .position(|p| p.bytes().all(|b| b.is_ascii_digit()))
            {
                Some(at) if at > 0 => format!(
                    "in the environment, a text inside {ENV_PREFIX}{}'s value that reads as a \
                     number or true/false is quoted there, as TOML writes it: \"…\"",
                    e.path[..at].join("__").to_uppercase()
                ),
                _ => format!(
                    "in the environment, a text that reads as a number or true/false is quoted: \
                     {key}='\"…\"'"
                ),
            };
            format!(
                "expected {}, found {} ({hint})",
                plain(expected),
                found(actual)
            )
        }
        Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => {
            format!("expected {}, found {}", plain(expected), found(actual))
        }
        Kind::MissingField(name) => {
            let key = if key.is_empty() {
                name.to_string()
            } else {
                format!("{key}.{name}")
            };
            let why = new_entry_hint(&e.path);
            return match file {
                Some(f) => format!("{f}: missing key {key}{why}"),
                None => format!("missing key {key}{why}"),
            };
        }
        other => other.to_string(),
    };
    let key = if key.is_empty() {
        "the configuration".to_string()
    } else {
        key
    };
    match file {
        Some(f) => format!("{f}: {key}: {what}"),
        None => format!("{key}: {what}"),
    }
}

/// A plan or model the built-in ones do not have must set its fields in full: said with the
/// ids that are built in, since a typo in one (`MODELRELAY_PLANS__TRAIL__RPM`) makes a new
/// entry, and "missing key …name" alone did not say so (found by an independent check).
fn new_entry_hint(path: &[String]) -> String {
    let defaults = super::Config::default();
    let (what, known): (&str, Vec<&String>) = match path.first().map(String::as_str) {
        Some("plans") => ("plan", defaults.plans.keys().collect()),
        Some("models") => ("model", defaults.models.keys().collect()),
        _ => return String::new(),
    };
    let Some(id) = path.get(1) else {
        return String::new();
    };
    let known: Vec<&str> = known.iter().map(|k| k.as_str()).collect();
    format!(
        " ({what} {id:?} is not a built-in one ({}), so it must set every field; a typo in its \
         id makes a new {what})",
        known.join(", ")
    )
}

/// Whether the value at `path` is one of the secrets (`check-config` redacts them too).
fn is_secret(path: &[String]) -> bool {
    path.last().is_some_and(|k| {
        ["api_key", "client_secret", "smtp_url"].contains(&k.to_ascii_lowercase().as_str())
    })
}

/// The unknown key in full (`server.listn`, or its variable's name).
fn shown(path: &str, name: &str) -> String {
    if path
        .to_ascii_lowercase()
        .ends_with(&name.to_ascii_lowercase())
    {
        path.to_string()
    } else if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// What was found, as the operator wrote it (`-3`, `"lots"`, a table) rather than in serde's
/// terms (`signed int \`-3\``; found by an independent check).
fn found(actual: &Actual) -> String {
    match actual {
        Actual::Bool(v) => v.to_string(),
        Actual::Unsigned(v) => v.to_string(),
        Actual::Signed(v) => v.to_string(),
        Actual::Float(v) => v.to_string(),
        Actual::Char(v) => format!("{:?}", v.to_string()),
        Actual::Str(v) => format!("{v:?}"),
        Actual::Seq => "a list".into(),
        Actual::Map => "a table".into(),
        Actual::Unit | Actual::Option => "nothing".into(),
        other => other.to_string(),
    }
}

/// Serde's expectation in plain terms (Rust's integer types as "a whole number").
fn plain(expected: &str) -> String {
    match expected {
        // Not "0 or more": many of these keys refuse 0 too, which the checks after parsing
        // say (`probe_secs = -1` was told "0 or more", then 0 was refused: an independent
        // check).
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number, not negative".into(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number".into(),
        "f32" | "f64" => "a number".into(),
        "a boolean" | "bool" => "true or false".into(),
        other => other.to_string(),
    }
}
