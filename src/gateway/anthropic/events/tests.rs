//! Tests of `events.rs`.

use super::*;
use std::time::Instant;

fn ev(data: &str) -> SseEvent {
    SseEvent {
        event: None,
        data: data.into(),
    }
}

#[test]
fn a_stream_is_read_renamed_and_ended() {
    let mut e = Events::new(PublicModel::new("deepseek-v4-flash"));
    let mut t = Tally::new(Instant::now());
    let start = r#"{"type":"message_start","message":{"id":"m","type":"message","role":"assistant","model":"deepseek-v4-flash-up","content":[],"usage":{"input_tokens":10,"cache_read_input_tokens":64,"output_tokens":1}}}"#;
    let Ok(Step::Send(out)) = e.event(&ev(start), &mut t) else {
        panic!()
    };
    assert!(out.starts_with("event: message_start\ndata: "));
    assert!(out.contains(r#""model":"deepseek-v4-flash""#), "{out}");
    assert!(
        t.usage.is_none(),
        "message_start's output count is a placeholder"
    );
    assert_eq!(t.reported.prompt, Some((64, 10)));
    for d in [
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hmm"}}"#,
        r#"{"type":"ping"}"#,
        r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Hi"}}"#,
    ] {
        let Ok(Step::Send(out)) = e.event(&ev(d), &mut t) else {
            panic!("{d}")
        };
        assert!(out.ends_with("\n\n") && out.contains(d), "{out}");
    }
    // DeepSeek's final count carries the output alone: the input counts billed are written
    // in, as Anthropic's API repeats them there.
    let d = r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":7}}"#;
    let Ok(Step::Send(out)) = e.event(&ev(d), &mut t) else {
        panic!("{d}")
    };
    assert_eq!(
        out,
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\
         \"usage\":{\"output_tokens\":7,\"input_tokens\":10,\"cache_read_input_tokens\":64}}\n\n"
    );
    let u = t.usage.unwrap();
    assert_eq!((u.hit, u.miss, u.completion), (64, 10, 7));
    assert_eq!(t.output_estimate(), 2);
    let Ok(Step::End(end)) = e.event(&ev(r#"{"type":"message_stop"}"#), &mut t) else {
        panic!()
    };
    assert_eq!(end, MESSAGE_STOP);
    assert!(
        e.event(
            &ev(r#"{"type":"error","error":{"type":"overloaded_error","message":"x"}}"#),
            &mut t
        )
        .is_err()
    );
    assert!(e.event(&ev("not json"), &mut t).is_err());
}

/// Upstream's own `overloaded_error` mid-stream reaches the client as `overloaded_error`
/// (which the SDKs and Claude Code retry later); any other error event, or none, as a
/// plain upstream error (found by an independent check: all were `api_error`).
#[test]
fn an_overloaded_error_event_is_told_as_overloaded() {
    for (data, busy) in [
        (
            r#"{"type":"error","error":{"type":"overloaded_error","message":"x"}}"#,
            true,
        ),
        (
            r#"{"type":"error","error":{"message":"x","type":"overloaded_error"}}"#,
            true,
        ),
        (
            r#"{"type":"error","error":{"type":"api_error","message":"x"}}"#,
            false,
        ),
        (
            r#"{"type":"error","error":{"type":"rate_limit_error"}}"#,
            false,
        ),
        (r#"{"type":"error","error":"overloaded_error"}"#, false),
        (r#"{"type":"error"}"#, false),
    ] {
        let mut e = Events::new(PublicModel::new("m"));
        let mut t = Tally::new(Instant::now());
        assert!(matches!(e.failure(), GatewayError::Upstream));
        assert!(e.event(&ev(data), &mut t).is_err(), "{data}");
        let told = e.failure();
        assert_eq!(
            matches!(told, GatewayError::UpstreamOverloaded),
            busy,
            "{data}"
        );
        assert_eq!(matches!(told, GatewayError::Upstream), !busy, "{data}");
    }
}

/// A final `message_delta` without usage (DeepSeek always sends one) reaches the client
/// with the output count as billed, our estimate: without it the SDKs failed reading the
/// final message. One with usage passes as it came.
#[test]
fn a_message_delta_without_usage_gets_the_billed_output_count() {
    let mut e = Events::new(PublicModel::new("m"));
    let mut t = Tally::new(Instant::now());
    let start = r#"{"type":"message_start","message":{"model":"m","usage":{"input_tokens":10,"output_tokens":1}}}"#;
    assert!(e.event(&ev(start), &mut t).is_ok());
    for _ in 0..3 {
        let d =
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#;
        assert!(e.event(&ev(d), &mut t).is_ok());
    }
    let delta =
        r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null}}"#;
    let Ok(Step::Send(out)) = e.event(&ev(delta), &mut t) else {
        panic!()
    };
    let data = out
        .strip_prefix("event: message_delta\ndata: ")
        .and_then(|d| d.strip_suffix("\n\n"))
        .unwrap_or_else(|| panic!("{out}"));
    let v: serde_json::Value = serde_json::from_str(data).unwrap();
    assert!(t.output_estimate() > 0);
    assert_eq!(v["usage"]["output_tokens"], t.output_estimate(), "{v}");
    assert_eq!(v["delta"]["stop_reason"], "end_turn", "{v}");
    assert!(t.finished);
    // A usage without a readable output count: the count written in, the rest kept, one
    // `usage` member (it was appended as a second one, or passed without a count).
    for usage in [
        "{}",
        r#"{"input_tokens":20}"#,
        r#"{"output_tokens":null}"#,
        "null",
        r#"{"output_tokens":"7"}"#,
        r#"{"output_tokens":-3}"#,
    ] {
        let delta = format!(
            r#"{{"type":"message_delta","delta":{{"stop_reason":"end_turn"}},"usage":{usage}}}"#
        );
        let Ok(Step::Send(out)) = e.event(&ev(&delta), &mut t) else {
            panic!("{delta}")
        };
        let data = out
            .strip_prefix("event: message_delta\ndata: ")
            .and_then(|d| d.strip_suffix("\n\n"))
            .unwrap_or_else(|| panic!("{out}"));
        assert_eq!(data.matches("\"usage\"").count(), 1, "{data}");
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(
            v["usage"]["output_tokens"],
            t.output_estimate(),
            "{usage}: {v}"
        );
        if usage.contains("input_tokens") {
            assert_eq!(v["usage"]["input_tokens"], 20, "{v}");
        }
    }
}

/// A `message_delta` whose usage repeats only some input counts keeps the others from
/// `message_start` (as the SDKs read it); one whose counts are all zero is a placeholder.
#[test]
fn input_counts_are_merged_field_by_field() {
    let mut e = Events::new(PublicModel::new("m"));
    let mut t = Tally::new(Instant::now());
    let start = r#"{"type":"message_start","message":{"model":"m","usage":{"input_tokens":10,"cache_read_input_tokens":64,"output_tokens":1}}}"#;
    assert!(e.event(&ev(start), &mut t).is_ok());
    let delta = r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"input_tokens":0,"cache_read_input_tokens":0,"output_tokens":7}}"#;
    assert!(e.event(&ev(delta), &mut t).is_ok());
    let u = t.usage.unwrap();
    assert_eq!(
        (u.hit, u.miss, u.completion),
        (64, 10, 7),
        "zeros: a placeholder"
    );
    // A later count of a field is the count (cumulative, as output is).
    let delta =
        r#"{"type":"message_delta","delta":{},"usage":{"input_tokens":12,"output_tokens":9}}"#;
    assert!(e.event(&ev(delta), &mut t).is_ok());
    let u = t.usage.unwrap();
    assert_eq!((u.hit, u.miss, u.completion), (64, 12, 9));
    // A full later reading is the count, smaller or not (a correction), a 0 in it too.
    let delta = r#"{"type":"message_delta","delta":{},"usage":{"input_tokens":0,"cache_read_input_tokens":60,"output_tokens":9}}"#;
    assert!(e.event(&ev(delta), &mut t).is_ok());
    let u = t.usage.unwrap();
    assert_eq!((u.hit, u.miss, u.completion), (60, 0, 9));
}

/// Readings as the SDK reads them (a field a later event lacks keeps its value): the
/// bill is the usage the customer's own SDK reports. A ±1 in a partial reading moved the
/// bill 17× when one reading was taken alone (found by an independent check).
#[test]
fn the_input_billed_is_what_the_sdk_reports() {
    for (start, delta, want) in [
        (
            r#"{"input_tokens":1000}"#,
            r#"{"cache_read_input_tokens":1000}"#,
            (1000, 1000),
        ),
        (
            r#"{"input_tokens":1000}"#,
            r#"{"cache_read_input_tokens":999}"#,
            (999, 1000),
        ),
        (
            r#"{"input_tokens":5,"cache_read_input_tokens":995}"#,
            r#"{"input_tokens":1000}"#,
            (995, 1000),
        ),
        (
            r#"{"input_tokens":1000,"cache_read_input_tokens":0}"#,
            r#"{"input_tokens":199,"cache_read_input_tokens":800}"#,
            (800, 199),
        ),
        (
            r#"{"input_tokens":1000,"cache_read_input_tokens":500}"#,
            r#"{"input_tokens":0,"cache_creation_input_tokens":0,"cache_read_input_tokens":1400}"#,
            (1400, 0),
        ),
    ] {
        let mut e = Events::new(PublicModel::new("m"));
        let mut t = Tally::new(Instant::now());
        let start =
            format!(r#"{{"type":"message_start","message":{{"model":"m","usage":{start}}}}}"#);
        assert!(e.event(&ev(&start), &mut t).is_ok());
        let delta = format!(
            r#"{{"type":"message_delta","delta":{{"stop_reason":"end_turn"}},"usage":{{"output_tokens":3,{}}}}}"#,
            &delta[1..delta.len() - 1]
        );
        assert!(e.event(&ev(&delta), &mut t).is_ok());
        let u = t.usage.unwrap();
        assert_eq!((u.hit, u.miss), want, "{start} then {delta}");
    }
}

/// The output count never shrinks: a final `0` after an interim 500 is not the count.
#[test]
fn the_output_count_never_shrinks() {
    let mut e = Events::new(PublicModel::new("m"));
    let mut t = Tally::new(Instant::now());
    let start = r#"{"type":"message_start","message":{"model":"m","usage":{"input_tokens":1000,"output_tokens":1}}}"#;
    assert!(e.event(&ev(start), &mut t).is_ok());
    for delta in [
        r#"{"type":"message_delta","delta":{"stop_reason":null},"usage":{"output_tokens":500}}"#,
        r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":0}}"#,
    ] {
        assert!(e.event(&ev(delta), &mut t).is_ok());
    }
    assert_eq!(t.usage.unwrap().completion, 500);
}

/// A later reading that moves input tokens into the cache read, same total, is the count:
/// 800 hit + 200 miss, not 800 hit + 1 000 miss (each field's larger, as it was read).
#[test]
fn input_counts_moved_between_fields_are_not_counted_twice() {
    let mut e = Events::new(PublicModel::new("m"));
    let mut t = Tally::new(Instant::now());
    let start = r#"{"type":"message_start","message":{"model":"m","usage":{"input_tokens":1000,"cache_read_input_tokens":0,"output_tokens":1}}}"#;
    assert!(e.event(&ev(start), &mut t).is_ok());
    assert_eq!(t.reported.prompt, Some((0, 1000)));
    let delta = r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":10,"input_tokens":200,"cache_read_input_tokens":800,"cache_creation_input_tokens":0}}"#;
    assert!(e.event(&ev(delta), &mut t).is_ok());
    let u = t.usage.unwrap();
    assert_eq!(
        (u.prompt, u.hit, u.miss, u.completion),
        (1000, 800, 200, 10)
    );
}

/// A `message_start` whose input counts are all zero (the real ones to come at the end)
/// reports no prompt: a stream cut before the end bills the estimate, labelled so, not
/// a prompt of 0 tokens.
#[test]
fn zero_input_counts_are_a_placeholder() {
    let mut e = Events::new(PublicModel::new("m"));
    let mut t = Tally::new(Instant::now());
    let start = r#"{"type":"message_start","message":{"model":"m","usage":{"input_tokens":0,"cache_read_input_tokens":0,"cache_creation_input_tokens":0,"output_tokens":1}}}"#;
    assert!(e.event(&ev(start), &mut t).is_ok());
    assert_eq!(t.reported.prompt, None);
    // Finished with its output count but input counts still zero, then cut before
    // message_stop: a whole answer (its prompt estimated), not an error to retry.
    let mut cut = Events::new(PublicModel::new("m"));
    let mut ct = Tally::new(Instant::now());
    assert!(cut.event(&ev(start), &mut ct).is_ok());
    let end = r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":10,"input_tokens":0}}"#;
    assert!(cut.event(&ev(end), &mut ct).is_ok());
    assert!(ct.usage.is_none());
    assert_eq!(ct.reported.output, Some(10));
    assert!(cut.end_at_eof(&ct).is_ok());
    let delta = r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":5,"input_tokens":30,"cache_read_input_tokens":10}}"#;
    assert!(e.event(&ev(delta), &mut t).is_ok());
    let u = t.usage.unwrap();
    assert_eq!((u.hit, u.miss, u.completion), (10, 30, 5));
}

/// A `type` that is not a name (a line break, escaped in its JSON) would end our `event:`
/// line and pass the rest off as events of its own: refused, not relayed.
#[test]
fn a_type_that_is_not_a_name_is_refused() {
    let mut e = Events::new(PublicModel::new("m"));
    let mut t = Tally::new(Instant::now());
    for data in [
        r#"{"type":"ping\n\ndata: {\"type\":\"message_stop\"}\n\nevent: x"}"#,
        r#"{"type":"ping\revent: message_stop"}"#,
        r#"{"type":"ping\u000a"}"#,
        r#"{"type":"a b"}"#,
        r#"{"type":""}"#,
    ] {
        assert!(e.event(&ev(data), &mut t).is_err(), "{data}");
    }
    let Ok(Step::Send(out)) = e.event(&ev(r#"{"type":"ping"}"#), &mut t) else {
        panic!()
    };
    assert_eq!(out, "event: ping\ndata: {\"type\":\"ping\"}\n\n");
}

/// Text the tree refuses (a number out of `f64`'s range, a lone surrogate) is not relayed,
/// even in a member the relay does not read; a member written twice is read as a JSON map
/// reads it (the last), not taken for a broken stream.
#[test]
fn what_the_tree_refuses_is_not_relayed_and_repeats_are_read_as_a_map_does() {
    let mut e = Events::new(PublicModel::new("m"));
    let mut t = Tally::new(Instant::now());
    for data in [
        r#"{"type":"ping","x":1e400}"#,
        r#"{"type":"ping","x":"\udcff"}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"\ud800"}}"#,
    ] {
        assert!(e.event(&ev(data), &mut t).is_err(), "{data}");
    }
    let twice = r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hel","text":"lo!"}}"#;
    let Ok(Step::Send(out)) = e.event(&ev(twice), &mut t) else {
        panic!()
    };
    assert!(out.starts_with("event: content_block_delta\n"), "{out}");
    assert!(
        out.contains(r#""text":"lo!""#) && !out.contains("hel"),
        "{out}"
    );
    let usage = r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"input_tokens":5,"output_tokens":50,"output_tokens":60}}"#;
    assert!(e.event(&ev(usage), &mut t).is_ok());
    assert_eq!(t.usage.map(|u| u.completion), Some(60));
}

#[test]
fn eof_is_complete_only_with_the_output_count() {
    let mut e = Events::new(PublicModel::new("m"));
    let mut t = Tally::new(Instant::now());
    assert!(e.end_at_eof(&t).is_err());
    let start = r#"{"type":"message_start","message":{"model":"m","usage":{"input_tokens":10,"output_tokens":1}}}"#;
    assert!(e.event(&ev(start), &mut t).is_ok());
    // An interim count (no `stop_reason`): the answer may go on; a break now is a break.
    let interim = r#"{"type":"message_delta","delta":{},"usage":{"output_tokens":2}}"#;
    assert!(e.event(&ev(interim), &mut t).is_ok());
    assert!(t.usage.is_some());
    assert!(e.end_at_eof(&t).is_err());
    let last = r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":7}}"#;
    assert!(e.event(&ev(last), &mut t).is_ok());
    assert!(e.end_at_eof(&t).is_ok());
}

/// A bare `data:` and a `ping` whose data is not Anthropic's are passed over, not the end
/// of the stream (found by an independent check: the stream ended with an error and was
/// billed by estimate); an unreadable event of another name still ends it.
#[test]
fn empty_events_and_odd_pings_are_passed_over() {
    let mut e = Events::new(PublicModel::new("m"));
    let mut t = Tally::new(Instant::now());
    assert!(matches!(e.event(&ev(""), &mut t), Ok(Step::Skip)));
    assert!(matches!(e.event(&ev(" "), &mut t), Ok(Step::Skip)));
    let odd_ping = SseEvent {
        event: Some("ping".into()),
        data: "{}".into(),
    };
    assert!(matches!(e.event(&odd_ping, &mut t), Ok(Step::Skip)));
    let odd_delta = SseEvent {
        event: Some("content_block_delta".into()),
        data: "{}".into(),
    };
    assert!(e.event(&odd_delta, &mut t).is_err());
}

/// `message_delta` carries the input counts billed, as Anthropic's API sends them there and
/// as clients that read usage from this event alone need (LangChain's ChatAnthropic reported a
/// streamed prompt as 0): written in when missing or different (a delta of zeros after real
/// counts, which the bill does not take), left as it is when it has them, and nothing added
/// when no input count came at all.
#[test]
fn the_final_count_repeats_the_input_counts_billed() {
    let start = r#"{"type":"message_start","message":{"model":"m","usage":{"input_tokens":10,"cache_read_input_tokens":64,"cache_creation_input_tokens":0,"output_tokens":1}}}"#;
    let run = |start: &str, delta: &str| -> (String, Option<(u64, u64, u64)>) {
        let mut e = Events::new(PublicModel::new("deepseek-v4-flash"));
        let mut t = Tally::new(Instant::now());
        assert!(matches!(e.event(&ev(start), &mut t), Ok(Step::Send(_))));
        let Ok(Step::Send(out)) = e.event(&ev(delta), &mut t) else {
            panic!("{delta}")
        };
        let data = out.lines().nth(1).unwrap().strip_prefix("data: ").unwrap();
        (
            data.to_string(),
            t.usage.map(|u| (u.hit, u.miss, u.completion)),
        )
    };
    let usage_of = |data: &str| serde_json::from_str::<Value>(data).unwrap()["usage"].clone();
    let billed = serde_json::json!({"input_tokens": 10, "cache_read_input_tokens": 64,
        "cache_creation_input_tokens": 0, "output_tokens": 9});
    for delta in [
        r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":9}}"#,
        r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"input_tokens":0,"cache_read_input_tokens":0,"output_tokens":9}}"#,
        r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":9,"input_tokens":10}}"#,
    ] {
        let (data, usage) = run(start, delta);
        assert_eq!(usage_of(&data), billed, "{delta} -> {data}");
        assert_eq!(usage, Some((64, 10, 9)), "{delta}");
    }
    // Already whole: passed on as it came, byte for byte.
    let whole = r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"cache_creation_input_tokens":0,"output_tokens":9,"input_tokens":10,"cache_read_input_tokens":64}}"#;
    assert_eq!(run(start, whole).0, whole);
    // No input count at all (zeros): nothing to repeat.
    let none = r#"{"type":"message_start","message":{"model":"m","usage":{"input_tokens":0,"output_tokens":1}}}"#;
    let delta = r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":9}}"#;
    assert_eq!(run(none, delta).0, delta);
}
