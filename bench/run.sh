#!/usr/bin/env bash
# The benchmark, in one command: builds in release mode, measures modelrelay against nginx (a
# plain reverse proxy) and LiteLLM in front of the same instant mock upstream, and writes
# bench/RESULTS.md. Not part of CI. Run as root on an otherwise idle machine (it installs nginx,
# wrk and linux-perf with apt-get when missing, and raises the open-file limit).
#
#   bench/run.sh                # the full run (about 25 minutes on 2 cores)
#   bench/run.sh --quick        # a short smoke run (fewer requests, 1 repeat, 1k streams)
#   bench/run.sh --no-litellm   # skip the LiteLLM peer
#   Other arguments go to `mr-bench run` (see `mr-bench run --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
target="$root/target/bench/cargo"
out="$root/target/bench"
mkdir -p "$out"

missing=()
command -v nginx >/dev/null || missing+=(nginx)
command -v wrk >/dev/null || missing+=(wrk)
command -v taskset >/dev/null || missing+=(util-linux)
command -v lscpu >/dev/null || missing+=(util-linux)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "bench/run.sh: missing ${missing[*]}; run as root or: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >/dev/null
fi
if [ "$(nproc)" -lt 2 ]; then
  echo "bench/run.sh: needs 2 cores (servers on core 0, mock and load on core 1)" >&2
  exit 1
fi

# 10,000 streams need ~3 descriptors each across the three processes.
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
# More ephemeral ports and a longer accept queue for the stream ramp (best effort).
sysctl -qw net.ipv4.ip_local_port_range="10000 65000" 2>/dev/null || true
sysctl -qw net.core.somaxconn=8192 2>/dev/null || true

args=()
litellm="bench/litellm/start.sh"
# The figures shown as "before": the earlier round's headline (BENCH_BEFORE=FILE overrides).
before="${BENCH_BEFORE:-bench/results/round1.json}"
for a in "$@"; do
  case "$a" in
    --quick) args+=(--repeats 1 --latency-requests 2000 --wrk-secs 3 --streams 1000) ;;
    --no-litellm) litellm="" ;;
    *) args+=("$a") ;;
  esac
done

# First: `cargo bench` rebuilds the modelrelay binary in the same directory without the
# feature, so the benchmark build comes after it.
echo "== ledger writer" >&2
cargo bench --locked --target-dir "$target" --bench ledger -- --rows 200000 | tee "$out/ledger.txt"
ledger=$(sed -n 's/^LEDGER_ROWS_PER_SEC=//p' "$out/ledger.txt" | tail -1)

echo "== building (release; modelrelay with the bench-passthrough route, in $target)" >&2
cargo build --locked --release --target-dir "$target" --features bench-passthrough --bin modelrelay
cargo build --locked --release --target-dir "$target" -p modelrelay-bench

if [ -n "$litellm" ]; then
  echo "== preparing LiteLLM" >&2
  bench/litellm/start.sh --setup
fi

machine="$out/machine.md"
{
  echo '```'
  lscpu | grep -E '^(Architecture|CPU\(s\)|Model name|Thread|Core|Socket|Hypervisor|L[123])' || true
  echo "kernel: $(uname -r)"
  echo "rustc: $(rustc --version)"
  echo "nginx: $(nginx -v 2>&1)"
  echo "wrk: $(wrk -v 2>&1 | head -1)"
  if [ -n "$litellm" ]; then
    echo "litellm: $(bench/litellm/start.sh --version 2>/dev/null || echo unknown)"
  fi
  echo "modelrelay: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo '```'
} >"$machine"

echo "== running (servers on core 0, mock and load on core 1)" >&2
taskset -c 1 "$target/release/mr-bench" run \
  --modelrelay "$target/release/modelrelay" \
  --harness "$target/release/mr-bench" \
  --litellm "$litellm" \
  --machine "$machine" \
  ${ledger:+--ledger-rows-per-sec "$ledger"} \
  --label "$(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u +%Y-%m-%d)" \
  ${before:+--before "$before"} \
  --out bench/RESULTS.md \
  "${args[@]}"
