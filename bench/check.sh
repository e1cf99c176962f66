#!/usr/bin/env bash
# bench/check.sh — latency of the plan-limit check (POST /v1/usage/check) at
# a fixed offered rate from a separate load process (wrk), next to the floor
# of the same server (GET /health) at the same rate.
#
# Usage: bench/check.sh            (stack must be installable: ./dev/stack up)
# Env:   BENCH_RATE (2000 req/s), BENCH_DURATION_S (30), BENCH_CONNECTIONS (20),
#        BENCH_ROWS (200000 usage rows over the last 20 days), BENCH_API_PORT (18080)
# Output: a table on stdout and bench/results/check.json.
#
# wrk (Debian's 4.1) is closed-loop; the Lua script paces every connection
# with delay() so the offered rate is about connections * 1000 / delay_ms.
# The achieved rate is reported next to the target.
set -euo pipefail
cd "$(dirname "$0")/.."

rate=${BENCH_RATE:-2000}
duration=${BENCH_DURATION_S:-30}
conns=${BENCH_CONNECTIONS:-20}
rows=${BENCH_ROWS:-200000}
port=${BENCH_API_PORT:-18080}
ch=${AGENTMETER_CLICKHOUSE_URL:-http://127.0.0.1:8123}
db=agentmeter_bench_check
tenant=11111111-1111-4111-8111-111111111111   # dev tenant A (dev/api-keys.toml)
org=33333333-3333-4333-8333-333333333333
admin=am_dev_admin

command -v wrk >/dev/null || { echo "bench/check.sh needs wrk (apt-get install -y wrk)" >&2; exit 1; }
bash dev/stack up --quiet
cargo build --release -q -p agentmeter-api -p agentmeter-schema

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

# The per-key abuse limits are off: the benchmark is one key at saturation.
AGENTMETER_CLICKHOUSE_URL="$ch" AGENTMETER_CLICKHOUSE_DATABASE="$db" AGENTMETER_API_ADDR="127.0.0.1:$port" \
  AGENTMETER_API_CHECK_RATE_PER_S=0 AGENTMETER_API_CHECK_CONCURRENCY_PER_KEY=0 \
  AGENTMETER_API_KEYS=dev/api-keys.toml RUST_LOG=warn target/release/agentmeter-api &
api_pid=$!
trap 'kill $api_pid 2>/dev/null || true; curl -sS "$ch/" --data-binary "DROP DATABASE IF EXISTS $db" >/dev/null || true' EXIT
base="http://127.0.0.1:$port"
for _ in $(seq 1 300); do curl -sf "$base/health" >/dev/null && break; sleep 0.1; done

# Three applicable limits (user, organization, tenant), all far from reached.
put() { curl -sS --fail-with-body -X PUT "$base/v1/limits/$1" -H "X-API-Key: $admin" -H 'Content-Type: application/json' -d "$2" >/dev/null; }
put 55555555-5555-4555-8555-000000000001 "{\"subject\":\"organization\",\"organization_id\":\"$org\",\"metric\":\"tokens\",\"period\":\"month\",\"time_zone\":\"Europe/Berlin\",\"max_value\":1000000000000}"
put 55555555-5555-4555-8555-000000000002 "{\"subject\":\"tenant\",\"metric\":\"tokens\",\"period\":\"rolling_hours\",\"rolling_hours\":720,\"max_value\":1000000000000}"
put 55555555-5555-4555-8555-000000000003 "{\"subject\":\"user\",\"organization_id\":\"$org\",\"user_id\":\"44444444-4444-4444-8444-000000000001\",\"metric\":\"tokens\",\"period\":\"day\",\"max_value\":1000000000000}"

body="{\"tokens\":10,\"organization_id\":\"$org\",\"user_id\":\"44444444-4444-4444-8444-000000000001\"}"
for _ in $(seq 1 300); do
  out=$(curl -s -X POST "$base/v1/usage/check" -H "X-API-Key: $admin" -H 'Content-Type: application/json' -d "$body" || true)
  case "$out" in *'"current_usage":0,'*|'') sleep 0.2 ;; *'"allowed":true'*) break ;; *) sleep 0.2 ;; esac
done
echo "sample check: ${out:0:300}..."

delay=$(( conns * 1000 / rate ))
run() { # path -> JSON line
  BENCH_PATH=$1 BENCH_DELAY_MS=$delay BENCH_KEY=$admin BENCH_ORG=$org \
    wrk -t2 -c"$conns" -d"${duration}s" -s bench/check.lua "$base" | tail -n 1
}
BENCH_PATH=/v1/usage/check BENCH_DELAY_MS=$delay BENCH_KEY=$admin BENCH_ORG=$org \
  wrk -t2 -c"$conns" -d5s -s bench/check.lua "$base" >/dev/null   # warm-up
health=$(run /health)
check=$(run /v1/usage/check)
metrics=$(curl -s "$base/metrics" | grep '^agentmeter_api_request_duration_seconds_bucket{.*route="/v1/usage/check"' || true)
load=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$health" "$check" "$rate" "$conns" "$delay" "$rows" "$metrics" "$load" <<'PY'
import json, os, platform, re, sys
health, check = json.loads(sys.argv[1]), json.loads(sys.argv[2])
rate, conns, delay, rows = map(int, sys.argv[3:7])
# Server-side latency of the check route (the API's own histogram, which
# excludes the load generator and the network stack), as bucket fractions.
buckets = {}
for line in sys.argv[7].splitlines():
    m = re.search(r'le="([^"]+)"\}\s+([0-9.e+]+)', line)
    if m:
        buckets[m.group(1)] = float(m.group(2))
total = buckets.get("+Inf", 0.0)
server = {f"share_within_{le}s": round(buckets[le] / total, 5) for le in ("0.0005", "0.001", "0.002", "0.005") if total and le in buckets}
server["requests"] = int(total)
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
result = {
    "benchmark": "plan-limit check, POST /v1/usage/check (3 applicable limits, memory-served)",
    "target": {"offered_rate_per_s": rate, "p99_ms_below": 2.0},
    "load": {"tool": "wrk 4.1 (paced with delay())", "connections": conns, "delay_ms": delay, "usage_rows": rows},
    "check": check,
    "health_floor": health,
    "p99_over_floor_ms": round(check["p99_ms"] - health["p99_ms"], 3),
    "check_p99_to_floor_p99": round(check["p99_ms"] / health["p99_ms"], 3) if health["p99_ms"] else None,
    "server_side_check_latency": server,
    "load_average_during_run": sys.argv[8],
    "meets_target": check["p99_ms"] < 2.0 and check["errors"] == 0,
    "machine": {"cpus": os.cpu_count(), "cpu": cpu, "kernel": platform.release()},
}
os.makedirs("bench/results", exist_ok=True)
json.dump(result, open("bench/results/check.json", "w"), indent=2)
print(f"{'endpoint':<18}{'rate/s':>10}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'p99.9 ms':>10}{'errors':>8}")
for name, r in (("GET /health", health), ("POST check", check)):
    print(f"{name:<18}{r['rate_per_s']:>10.0f}{r['p50_ms']:>10.3f}{r['p90_ms']:>10.3f}{r['p99_ms']:>10.3f}{r['p999_ms']:>10.3f}{r['errors']:>8}")
print(f"server-side check latency (API histogram): {server}; load average {sys.argv[8]}")
print(f"target: p99 < 2 ms at {rate} req/s -> {'met' if result['meets_target'] else 'NOT met'}; wrote bench/results/check.json")
PY
