#!/usr/bin/env bash
# The soak, in one command: builds the release gateway and the harness, then runs 30 minutes of
# mixed load against `modelrelay serve` (OpenAI and Anthropic requests, streams, upstream faults,
# client aborts, purchases, top-ups, rotations, operator commands, the console attached in tmux),
# checks that memory and descriptors stay flat and every invariant holds at the end, and writes
# the `## Soak` section of bench/RESULTS.md. Exits 1 when a check failed. Not part of CI.
#
#   bench/soak.sh                 # 30 minutes
#   bench/soak.sh --minutes 5     # a shorter run
#   Other arguments go to `mr-bench soak` (see `mr-bench soak --help`): --rate, --seed, bounds.
#
# Installs tmux and sqlite3 with apt-get when missing (as root); work files (data dir, config,
# the daemon's log) are kept in target/bench/soak until the next run.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
target="$root/target/bench/cargo"

missing=()
command -v tmux >/dev/null || missing+=(tmux)
# Not used by the run itself: for looking into target/bench/soak/data/modelrelay.db afterwards.
command -v sqlite3 >/dev/null || missing+=(sqlite3)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "bench/soak.sh: missing ${missing[*]}; run as root or: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >/dev/null
fi

# Streams, clients and upstream connections all hold descriptors; the run needs far fewer than
# this, but a leak should show as growth, not as EMFILE.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

echo "== building (release, in $target)" >&2
cargo build --locked --release --target-dir "$target" --bin modelrelay
cargo build --locked --release --target-dir "$target" -p modelrelay-bench

commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
git diff --quiet HEAD 2>/dev/null || commit="$commit (with local changes)"

echo "== soaking" >&2
exec "$target/release/mr-bench" soak \
  --modelrelay "$target/release/modelrelay" \
  --commit "$commit" \
  --out bench/RESULTS.md \
  "$@"
