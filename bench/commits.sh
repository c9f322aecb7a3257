#!/usr/bin/env bash
# Group commit under load: the gateway (store.sync = "full") pinned to core 0, wrk -t1 -cCONNS
# on core 1 for 10 s after 3 s of warm-up; prints RPS, the gateway's CPU per request (user +
# system, /proc/PID/stat) and ledger rows per commit (requests / fsync system calls, counted
# with `perf stat` on the syscalls tracepoints). The figures behind bench/PROFILE.md's row on
# the writer's gathering; alternate two binaries a few times, this host's noise is large.
#
#   bench/commits.sh BINARY LABEL [CONNS]   (CONNS default 64; needs wrk, perf, the harness)
set -euo pipefail
cd "$(dirname "$0")/.."
B=$1; L=$2; C=${3:-64}
# The gateway stays pinned; an error below must not leave it (or the mock) running.
w=$(mktemp -d); mkdir -p "$w/data"
mp=; gp=
trap 'kill $gp $mp 2>/dev/null || true; rm -rf "$w"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
up=$(port); gw=$(port)
cat > "$w"/gw.toml <<C
[server]
listen = "127.0.0.1:$gw"
data_dir = "$w/data"
log_level = "warn"
drain_secs = 0
[store]
sync = "full"
[upstream]
base_url = "http://127.0.0.1:$up"
api_key = "sk-bench-upstream"
[plans.pro]
budget_usd = "1000000"
rpm = 1000000000
max_in_flight = 1000000000
[models.deepseek-v4-flash]
max_in_flight = 1000000
C
taskset -c 1 target/bench/cargo/release/mr-bench mock --listen 127.0.0.1:$up > "$w"/mock.log 2>&1 & mp=$!
taskset -c 0 $B serve --config "$w"/gw.toml > "$w"/gw.log 2>&1 & gp=$!
for _ in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:$gw/healthz && break; sleep 0.2; done
key=$($B keys create --plan pro --budget 100000 --config "$w"/gw.toml)
cat > "$w"/w.lua <<LUA
wrk.method = "POST"
wrk.body = '{"model":"deepseek-v4-flash","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello."}],"max_tokens":64}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $key"
LUA
taskset -c 1 wrk -t1 -c$C -d3s -s "$w"/w.lua http://127.0.0.1:$gw/v1/chat/completions > /dev/null
t0=$(awk '{print $14+$15}' /proc/$gp/stat)
perf stat -e syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync -p $gp -o "$w"/perf.txt -- sleep 10 &
pp=$!
taskset -c 1 wrk -t1 -c$C -d10s -s "$w"/w.lua http://127.0.0.1:$gw/v1/chat/completions > "$w"/wrk.txt
wait $pp
t1=$(awk '{print $14+$15}' /proc/$gp/stat)
reqs=$(grep "requests in" "$w"/wrk.txt | awk '{print $1}')
rps=$(grep Requests/sec "$w"/wrk.txt | awk '{print $2}')
fs=$(grep -E "sys_enter_f(data)?sync" "$w"/perf.txt | awk '{s+=$1} END {print s}')
tck=$(getconf CLK_TCK)
python3 -c "r=$reqs; print('$L c$C rps', $rps, 'cpu_us/req', round(($t1-$t0)/$tck*1e6/r,1), 'rows/commit', round(r/max($fs,1),2))"
