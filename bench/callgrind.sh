#!/usr/bin/env bash
# Instructions per non-stream request, counted by callgrind (user space, every thread): the
# repeatable figure behind bench/PROFILE.md's "where the instructions go". Timings on a shared
# machine are noisy; instruction counts are not (the same binary twice: within 0.2 %).
#
#   bench/callgrind.sh [BINARY] [SYNC] [N] [PATH] [BODY]
#     BINARY  modelrelay built by bench/run.sh (default target/bench/cargo/release/modelrelay)
#     SYNC    store.sync: full or normal (default normal)
#     N       requests counted, after 300 of warm-up (default 2000)
#     PATH    /v1/chat/completions (default), /bench/passthrough/chat/completions or /v1/messages
#     BODY    a file holding the request body (default: a two-message chat, not streamed);
#             e.g. `bench/agent-body.py > /tmp/agent.json` for a Claude Code-shaped stream
# Leaves the dump in target/bench/callgrind/cg.out.1 for callgrind_annotate --inclusive=yes.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/bench/cargo/release/modelrelay}
sync=${2:-normal}; n=${3:-2000}; path=${4:-/v1/chat/completions}; body=${5:-}
mock=target/bench/cargo/release/mr-bench
command -v valgrind >/dev/null || { echo "bench/callgrind.sh: needs valgrind" >&2; exit 1; }
[ -x "$mock" ] || { echo "bench/callgrind.sh: build the harness first (bench/run.sh does)" >&2; exit 1; }
work=target/bench/callgrind; rm -rf "$work"; mkdir -p "$work/data"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
up=$(port); gw=$(port)
cat >"$work/gw.toml" <<C
[server]
listen = "127.0.0.1:$gw"
data_dir = "$(pwd)/$work/data"
log_level = "warn"
drain_secs = 0
[store]
sync = "$sync"
[upstream]
base_url = "http://127.0.0.1:$up"
api_key = "sk-bench-upstream"
[plans.pro]
budget_usd = "1000000"
rpm = 1000000000
max_in_flight = 1000000000
C
"$mock" mock --listen "127.0.0.1:$up" >"$work/mock.log" 2>&1 & mock_pid=$!
valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" "$bin" serve --config "$work/gw.toml" \
  >"$work/gateway.log" 2>&1 & gw_pid=$!
trap 'kill $gw_pid $mock_pid 2>/dev/null || true' EXIT
for _ in $(seq 120); do curl -s -o /dev/null "http://127.0.0.1:$gw/healthz" && break; sleep 1; done
key=$("$bin" keys create --plan pro --budget 100000 --config "$work/gw.toml")
load() {
  python3 - "$key" "$1" "$gw" "$path" "$body" <<'P'
import http.client, sys
key, n, port, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
body = '{"model":"deepseek-v4-flash","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello."}],"max_tokens":64}'
if sys.argv[5]:
    body = open(sys.argv[5], 'rb').read()
c = http.client.HTTPConnection("127.0.0.1", port)
for _ in range(n):
    c.request("POST", path, body, {"Authorization": "Bearer " + key, "Content-Type": "application/json"})
    r = c.getresponse(); r.read(); assert r.status == 200, r.status
P
}
load 300
callgrind_control -z "$gw_pid" >/dev/null
load "$n"
sleep 1
callgrind_control -d "$gw_pid" >/dev/null
sleep 2
total=$(awk '/^totals:/ {print $2}' "$work/cg.out.1")
echo "instructions per request: $((total / n)) ($path${body:+, body $body}, store.sync = $sync, $n requests)"
