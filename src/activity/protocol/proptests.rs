//! Properties of the admin socket's frames (issue 11): every `Request` is one line of JSON
//! that reads back as itself, and no line of arbitrary bytes or JSON panics either side's
//! reader (the daemon reads requests, the clients read responses).

use proptest::prelude::*;

use super::{Request, Response};
use crate::money::Usd;
use crate::proptest_support::{json, text};

fn usd() -> impl Strategy<Value = Usd> {
    prop_oneof![
        any::<i64>(),
        Just(i64::MIN),
        Just(i64::MAX),
        -10_000_000_000i64..10_000_000_000
    ]
    .prop_map(Usd::from_nanos)
}

fn request() -> impl Strategy<Value = Request> {
    let s = || text(16);
    prop_oneof![
        Just(Request::Ping),
        Just(Request::KeysList),
        s().prop_map(|key| Request::KeysShow { key }),
        (
            s(),
            prop::option::of(s()),
            prop::option::of(usd()),
            prop::option::of(s())
        )
            .prop_map(|(plan, email, budget_usd, note)| Request::KeysCreate {
                plan,
                email,
                budget_usd,
                note,
            }),
        s().prop_map(|key| Request::KeysRevoke { key }),
        (s(), usd()).prop_map(|(key, usd)| Request::KeysTopup { key, usd }),
        prop::option::of(any::<u32>()).prop_map(|limit| Request::OrdersList { limit }),
        s().prop_map(|order_id| Request::OrdersShow { order_id }),
        Just(Request::Subscribe),
        s().prop_map(|p| Request::Backup { path: p.into() }),
        s().prop_map(|key| Request::KeysRotate { key }),
        prop::option::of(any::<u32>()).prop_map(|limit| Request::MailList { limit }),
        any::<i64>().prop_map(|id| Request::MailRetry { id }),
        Just(Request::MailRetryFailed),
        Just(Request::UpstreamStatus),
        s().prop_map(|name| Request::UpstreamEnable { name }),
        s().prop_map(|name| Request::UpstreamDisable { name }),
    ]
}

const KEYS: &[&str] = &[
    "cmd",
    "type",
    "key",
    "plan",
    "email",
    "budget_usd",
    "note",
    "usd",
    "limit",
    "order_id",
    "path",
    "ping",
    "keys_topup",
    "keys_create",
    "message",
    "version",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A request is one line (its text has no newline, whatever its strings hold) and reads
    /// back as itself.
    #[test]
    fn every_request_round_trips_as_one_line(r in request()) {
        let line = serde_json::to_string(&r).unwrap();
        prop_assert!(!line.contains(['\n', '\r']), "{}", line);
        prop_assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), r);
    }

    /// Arbitrary bytes and arbitrary JSON lines never panic a reader of either side.
    #[test]
    fn arbitrary_lines_never_panic(
        raw in prop::collection::vec(any::<u8>(), 0..128),
        v in json(KEYS),
        tag in prop::sample::select(vec!["cmd", "type"]),
        name in prop::sample::select(vec![
            "ping", "keys_show", "keys_create", "keys_topup", "orders_list", "backup", "pong",
            "key", "snapshot", "event", "error", "nope",
        ]),
        fields in prop::collection::vec((prop::sample::select(KEYS), json(KEYS)), 0..4),
    ) {
        let mut tagged: serde_json::Map<String, serde_json::Value> =
            fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        tagged.insert(tag.into(), name.into());
        for line in [raw, serde_json::to_vec(&v).unwrap(), serde_json::to_vec(&tagged).unwrap()] {
            let _ = serde_json::from_slice::<Request>(&line);
            let _ = serde_json::from_slice::<Response>(&line);
        }
    }
}
