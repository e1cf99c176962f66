#!/usr/bin/env bash
# bench/check.sh — latency of the plan-limit check (POST /v1/usage/check) at
# a fixed offered rate from a separate load process (wrk), next to the floor
# of the same server (GET /health) at the same rate, in two topologies:
#
#   1 replica     one agentmeter-api without Valkey, wrk straight at it
#   2 replicas    two agentmeter-api replicas sharing the stack's Valkey
#                 (AGENTMETER_VALKEY_URL), behind HAProxy (deploy/haproxy.cfg,
#                 round-robin), wrk at HAProxy: the shape of every deployment
#
# Usage: bench/check.sh            (stack must be installable: ./dev/stack up;
#                                   needs wrk and haproxy: bench/run check installs both)
# Env:   BENCH_RATE (2000 req/s), BENCH_DURATION_S (30), BENCH_CONNECTIONS (20),
#        BENCH_ROWS (200000 usage rows over the last 20 days), BENCH_API_PORT (18080;
#        the replicas use the next two ports), AGENTMETER_VALKEY_URL (the stack's),
#        BENCH_SKIP_STACK=1 (a stack already running), BENCH_SKIP_BUILD=1 (existing binaries)
# Output: a table on stdout and bench/results/check.json.
#
# wrk (Debian's 4.1) is closed-loop; the Lua script paces every connection
# with delay() so the offered rate is about connections * 1000 / delay_ms.
# The achieved rate is reported next to the target.
#
# Every failure stops the script with a message on stderr naming the step,
# the command and its exit status (the ERR trap below; -E makes functions
# and command substitutions report too, so a failure inside `run` prints
# the failing command and then the step that called it).
set -Eeuo pipefail
cd "$(dirname "$0")/.."

step="start"
on_error() {
  local status=$1 line=$2 cmd=$3 signal=""
  ((status <= 128)) || signal=" = SIG$(kill -l $((status - 128)) 2>/dev/null || echo "?")"
  echo "bench/check.sh: FAILED during \"$step\": \`$cmd\` exited with status $status$signal (line $line${FUNCNAME[1]:+, in ${FUNCNAME[1]}})" >&2
}
trap 'on_error $? $LINENO "$BASH_COMMAND"' ERR
# fail MESSAGE: stop with MESSAGE on stderr.
fail() {
  echo "bench/check.sh: FAILED during \"$step\": $*" >&2
  exit 1
}

rate=${BENCH_RATE:-2000}
duration=${BENCH_DURATION_S:-30}
conns=${BENCH_CONNECTIONS:-20}
rows=${BENCH_ROWS:-200000}
port=${BENCH_API_PORT:-18080}
ch=${AGENTMETER_CLICKHOUSE_URL:-http://127.0.0.1:8123}
valkey=${AGENTMETER_VALKEY_URL:-redis://127.0.0.1:${AGENTMETER_STACK_VALKEY_PORT:-6379}}
db=agentmeter_bench_check
tenant=11111111-1111-4111-8111-111111111111   # dev tenant A (dev/api-keys.toml)
org=33333333-3333-4333-8333-333333333333
admin=am_dev_admin

command -v wrk >/dev/null || fail "wrk is missing (apt-get install -y wrk)"
command -v haproxy >/dev/null || fail "haproxy is missing (apt-get install -y haproxy)"
if [[ ${BENCH_SKIP_STACK:-0} != 1 ]]; then
  step="start the local stack"
  bash dev/stack up --quiet
fi
if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
  step="release build of agentmeter-api"
  cargo build --release -q -p agentmeter-api -p agentmeter-schema
fi

step="load $rows usage rows into $db"

chq() { curl -sS --fail-with-body "$ch/?database=$db" --data-binary "$1"; }
curl -sS --fail-with-body "$ch/" --data-binary "DROP DATABASE IF EXISTS $db" >/dev/null
target/release/agentmeter-migrate --clickhouse-url "$ch" --clickhouse-database "$db" >/dev/null

# Usage: $rows billable executions of 100 users of one organization, spread
# over the last 20 days (dense minute buckets: the worst case of a month sum).
chq "INSERT INTO agent_executions (event_id, occurred_at, tenant_id, execution_id, execution_kind, billable,
       organization_id, user_id, input_tokens, output_tokens, total_tokens, cost_usd, messages_count, status)
     SELECT generateUUIDv4(), now64(3) - toIntervalSecond(number * 1728000 / $rows), toUUID('$tenant'), generateUUIDv4(),
       'agent_chat', true, toUUID('$org'),
       toUUID(concat('44444444-4444-4444-8444-', leftPad(toString(number % 100), 12, '0'))),
       7, 3, 10, toDecimal64(0.001234, 6), 1, 'success'
     FROM numbers($rows)"

pids=()
stop_servers() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
trap 'stop_servers; curl -sS "$ch/" --data-binary "DROP DATABASE IF EXISTS $db" >/dev/null || true' EXIT

# start_api ADDR [VALKEY_URL]: one agentmeter-api on ADDR; with a Valkey URL
# (the replicas) under a key prefix of its own. The per-key abuse limits are
# off (the benchmark is one key at saturation); with Valkey the shared
# limiter still makes its one script call per request.
start_api() {
  AGENTMETER_CLICKHOUSE_URL="$ch" AGENTMETER_CLICKHOUSE_DATABASE="$db" AGENTMETER_API_ADDR="$1" \
    AGENTMETER_VALKEY_URL="${2:-}" AGENTMETER_VALKEY_KEY_PREFIX="$db.$$" AGENTMETER_API_CHECK_RATE_PER_S=0 AGENTMETER_API_CHECK_CONCURRENCY_PER_KEY=0 \
    AGENTMETER_API_KEYS=dev/api-keys.toml RUST_LOG=warn target/release/agentmeter-api &
  pids+=($!)
}
# wait_health BASE [LOG_FILE]: until BASE answers GET /health; the log
# file's content is printed if it never does.
wait_health() {
  for _ in $(seq 1 300); do curl -sf "$1/health" >/dev/null && return 0; sleep 0.1; done
  local log=""
  [[ -z ${2:-} ]] || log=$'; log:\n'$(cat "$2")
  fail "no answer from $1/health within 30 s$log"
}

body="{\"tokens\":10,\"organization_id\":\"$org\",\"user_id\":\"44444444-4444-4444-8444-000000000001\"}"
# wait_loaded BASE: until BASE answers the check from loaded usage counters.
wait_loaded() {
  local out=""
  for _ in $(seq 1 300); do
    out=$(curl -s -X POST "$1/v1/usage/check" -H "X-API-Key: $admin" -H 'Content-Type: application/json' -d "$body" || true)
    case "$out" in
      *'"current_usage":0,'* | '') sleep 0.2 ;;
      *'"allowed":true'*)
        echo "sample check from $1: ${out:0:200}..."
        return 0
        ;;
      *) sleep 0.2 ;;
    esac
  done
  fail "$1 did not answer the check from loaded usage counters within 60 s; last answer: ${out:0:300}"
}

delay=$(( conns * 1000 / rate ))
# wrk_paced BASE PATH SECONDS: wrk's whole output; its last line is
# check.lua's JSON summary. A failing wrk stops the script with its output.
wrk_paced() {
  local out status=0
  out=$(BENCH_PATH=$2 BENCH_DELAY_MS=$delay BENCH_KEY=$admin BENCH_ORG=$org \
    wrk -t2 -c"$conns" -d"$3s" -s bench/check.lua "$1" 2>&1) || status=$?
  ((status == 0)) || fail "wrk at $1$2 exited with status $status; its output:"$'\n'"$out"
  printf '%s\n' "$out"
}
run() { # BASE PATH -> the JSON summary line
  local out summary
  out=$(wrk_paced "$1" "$2" "$duration")
  summary=${out##*$'\n'}
  [[ $summary == '{"requests"'* ]] || fail "wrk at $1$2 printed no summary; its output:"$'\n'"$out"
  printf '%s\n' "$summary"
}
warm_up() {
  wrk_paced "$1" /v1/usage/check 5 >/dev/null
}
# check_histogram BASE...: the check route's latency buckets of each server.
check_histogram() {
  local b
  for b in "$@"; do
    curl -s "$b/metrics" | grep '^agentmeter_api_request_duration_seconds_bucket{.*route="/v1/usage/check"' | sed "s|^|$b |" || true
  done
}

# ---- 1 replica, no Valkey (the figure of the single-process design)
step="1 replica: start agentmeter-api"
single="http://127.0.0.1:$port"
start_api "127.0.0.1:$port"
wait_health "$single"

step="1 replica: put the limits"

# Three applicable limits (user, organization, tenant), all far from reached.
put() { curl -sS --fail-with-body -X PUT "$single/v1/limits/$1" -H "X-API-Key: $admin" -H 'Content-Type: application/json' -d "$2" >/dev/null; }
put 55555555-5555-4555-8555-000000000001 "{\"subject\":\"organization\",\"organization_id\":\"$org\",\"metric\":\"tokens\",\"period\":\"month\",\"time_zone\":\"Europe/Berlin\",\"max_value\":1000000000000}"
put 55555555-5555-4555-8555-000000000002 "{\"subject\":\"tenant\",\"metric\":\"tokens\",\"period\":\"rolling_hours\",\"rolling_hours\":720,\"max_value\":1000000000000}"
put 55555555-5555-4555-8555-000000000003 "{\"subject\":\"user\",\"organization_id\":\"$org\",\"user_id\":\"44444444-4444-4444-8444-000000000001\",\"metric\":\"tokens\",\"period\":\"day\",\"max_value\":1000000000000}"
step="1 replica: wait for the usage counters"
wait_loaded "$single"

echo "1 replica: warm-up, GET /health, POST /v1/usage/check (${duration} s each)"
step="1 replica: warm-up"
warm_up "$single"
step="1 replica: GET /health"
health1=$(run "$single" /health)
step="1 replica: POST /v1/usage/check"
check1=$(run "$single" /v1/usage/check)
step="1 replica: the API's histogram"
metrics1=$(check_histogram "$single")
load1=$(cut -d' ' -f1-3 /proc/loadavg)
stop_servers

# ---- 2 replicas sharing Valkey, behind HAProxy on the same front port
step="2 replicas: start the replicas and HAProxy"
r1="127.0.0.1:$((port + 1))"
r2="127.0.0.1:$((port + 2))"
start_api "$r1" "$valkey"
start_api "$r2" "$valkey"
front="http://127.0.0.1:$port"
haproxy_log=$(mktemp)
AGENTMETER_LB_ADDR="127.0.0.1:$port" AGENTMETER_API_1_ADDR="$r1" AGENTMETER_API_2_ADDR="$r2" \
  haproxy -db -f deploy/haproxy.cfg >"$haproxy_log" 2>&1 &
pids+=($!)
wait_health "http://$r1"
wait_health "http://$r2"
wait_health "$front" "$haproxy_log"
# Both replicas loaded their counters (and HAProxy's health checks see both).
step="2 replicas: wait for the usage counters"
wait_loaded "http://$r1"
wait_loaded "http://$r2"
sleep 2

echo "2 replicas + Valkey behind HAProxy: warm-up, GET /health, POST /v1/usage/check (${duration} s each)"
step="2 replicas: warm-up"
warm_up "$front"
step="2 replicas: GET /health"
health2=$(run "$front" /health)
step="2 replicas: POST /v1/usage/check"
check2=$(run "$front" /v1/usage/check)
step="2 replicas: the API's histograms"
metrics2=$(check_histogram "http://$r1" "http://$r2")
load2=$(cut -d' ' -f1-3 /proc/loadavg)
# awk reads all of haproxy's output: with `head -n 1` haproxy could be
# killed by SIGPIPE on its second write, and pipefail then ended the
# script here without a word.
haproxy_version=$(haproxy -v | awk 'NR == 1 { print $3 }')
stop_servers
rm -f "$haproxy_log"

step="write bench/results/check.json"
python3 - "$rate" "$conns" "$delay" "$rows" "$valkey" "$haproxy_version" \
  "$health1" "$check1" "$metrics1" "$load1" "$health2" "$check2" "$metrics2" "$load2" <<'PY'
import json, os, platform, re, sys
rate, conns, delay, rows = map(int, sys.argv[1:5])
valkey, haproxy_version = sys.argv[5], sys.argv[6]


def server_side(text):
    """The check route's latency as the API's own histogram reports it (it
    excludes the load generator, the proxy and the network stack): bucket
    fractions summed over the servers, plus the requests each server saw."""
    buckets, per_server = {}, {}
    for line in text.splitlines():
        m = re.search(r'^(\S+) .*le="([^"]+)"\}\s+([0-9.e+]+)', line)
        if m:
            buckets[m.group(2)] = buckets.get(m.group(2), 0.0) + float(m.group(3))
            if m.group(2) == "+Inf":
                per_server[m.group(1)] = int(float(m.group(3)))
    total = buckets.get("+Inf", 0.0)
    out = {f"share_within_{le}s": round(buckets[le] / total, 5) for le in ("0.0005", "0.001", "0.002", "0.005") if total and le in buckets}
    out["requests"] = int(total)
    out["requests_per_server"] = per_server
    return out


def topology(name, health, check, metrics, load):
    health, check = json.loads(health), json.loads(check)
    return {
        "topology": name,
        "check": check,
        "health_floor": health,
        "p99_over_floor_ms": round(check["p99_ms"] - health["p99_ms"], 3),
        "check_p99_to_floor_p99": round(check["p99_ms"] / health["p99_ms"], 3) if health["p99_ms"] else None,
        "server_side_check_latency": server_side(metrics),
        "load_average_after_run": load,
        "meets_target": check["p99_ms"] < 2.0 and check["errors"] == 0,
    }


single = topology("1 agentmeter-api replica without Valkey, wrk straight at it", *sys.argv[7:11])
two = topology(f"2 agentmeter-api replicas sharing Valkey ({valkey}) behind HAProxy {haproxy_version} "
               "(deploy/haproxy.cfg, round-robin), wrk at HAProxy", *sys.argv[11:15])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
result = {
    "benchmark": "plan-limit check, POST /v1/usage/check (3 applicable limits, memory-served)",
    "target": {"offered_rate_per_s": rate, "p99_ms_below": 2.0},
    "load": {"tool": "wrk 4.1 (paced with delay())", "connections": conns, "delay_ms": delay, "usage_rows": rows},
    "single_replica": single,
    "two_replicas": two,
    "meets_target": single["meets_target"] and two["meets_target"],
    "machine": {"cpus": os.cpu_count(), "cpu": cpu, "kernel": platform.release()},
}
os.makedirs("bench/results", exist_ok=True)
json.dump(result, open("bench/results/check.json", "w"), indent=2)
print(f"{'topology':<22}{'endpoint':<14}{'rate/s':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}{'errors':>8}")
for label, t in (("1 replica", single), ("2 replicas + Valkey", two)):
    for name, r in (("GET /health", t["health_floor"]), ("POST check", t["check"])):
        print(f"{label:<22}{name:<14}{r['rate_per_s']:>9.0f}{r['p50_ms']:>9.3f}{r['p90_ms']:>9.3f}{r['p99_ms']:>9.3f}{r['p999_ms']:>10.3f}{r['errors']:>8}")
for label, t in (("1 replica", single), ("2 replicas", two)):
    print(f"{label}: server-side check latency (API histograms) {t['server_side_check_latency']}; load average {t['load_average_after_run']}")
for label, t in (("1 replica", single), ("2 replicas + Valkey", two)):
    print(f"target: p99 < 2 ms at {rate} req/s, {label} -> {'met' if t['meets_target'] else 'NOT met'}")
print("wrote bench/results/check.json")
PY
