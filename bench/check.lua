-- wrk script for bench/check.sh: paced POST /v1/usage/check (or GET /health
-- when BENCH_PATH=/health) and a JSON summary on stdout's last line.
-- Pacing: every connection waits BENCH_DELAY_MS between requests, so the
-- offered rate is about connections * 1000 / (delay + latency).

local path = os.getenv("BENCH_PATH") or "/v1/usage/check"
local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "10")
local key = os.getenv("BENCH_KEY") or "am_dev_admin"
local org = os.getenv("BENCH_ORG") or "33333333-3333-4333-8333-333333333333"

wrk.headers["X-API-Key"] = key
if path == "/v1/usage/check" then
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.body = '{"tokens": 10, "usage_type": "tokens", "organization_id": "' .. org .. '"}'
else
  wrk.method = "GET"
end
wrk.path = path

function delay()
  return delay_ms
end

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  io.write(string.format(
    '{"requests": %d, "duration_s": %.3f, "rate_per_s": %.1f, "errors": %d, "p50_ms": %.3f, "p90_ms": %.3f, "p99_ms": %.3f, "p999_ms": %.3f, "max_ms": %.3f, "mean_ms": %.3f}\n',
    summary.requests, secs, summary.requests / secs,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency:percentile(99.9) / 1000, latency.max / 1000, latency.mean / 1000))
end
