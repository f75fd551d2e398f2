#!/usr/bin/env bash
# The real scrape (issue 18): Debian's prometheus scrapes a running
# `stepgraph demo --metrics-port 0`, and the completed-steps counter and the
# loss gauge it stored (queried through its HTTP API) must equal what the
# demo printed; `promtool check metrics` must accept the endpoint's text.
#
#   prometheus_scrape_test.sh path/to/stepgraph
#
# Exit 77 (ctest SKIP_RETURN_CODE) where prometheus or promtool is missing.
# Every process it starts is stopped on any exit (trap), every wait is
# bounded; the demo holds its final metrics until this script sends SIGTERM,
# so nothing races the demo's exit.
set -euo pipefail

sg=${1:?usage: $0 path/to/stepgraph}
prometheus=${PROMETHEUS:-/usr/bin/prometheus}
promtool=${PROMTOOL:-/usr/bin/promtool}
if [[ ! -x $prometheus || ! -x $promtool ]]; then
  echo "SKIP: $prometheus or $promtool not installed (Debian package prometheus; scripts/setup.sh installs it)"
  exit 77
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sg-scrape.XXXXXX")
demo_pid=""
prom_pid=""
cleanup() {
  local rc=$?
  for pid in $prom_pid $demo_pid; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in $prom_pid $demo_pid; do
    # bounded: SIGKILL after 10 s
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [[ $rc -ne 0 ]]; then
    echo "--- demo output"; cat "$tmp/demo.out" 2>/dev/null || true
    echo "--- prometheus log (tail)"; tail -20 "$tmp/prometheus.log" 2>/dev/null || true
  fi
  rm -rf "$tmp"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { echo "FAIL: $*" >&2; exit 1; }

# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.2 s.
wait_for() {
  local seconds=$1 what=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@"; do
    ((SECONDS < deadline)) || fail "timed out after ${seconds}s waiting for $what"
    sleep 0.2
  done
}

# 1. The demo: an ephemeral port (printed first), then its results, then it
#    holds the final values until SIGTERM.
"$sg" demo --backend host --steps 120 --warmup 3 --metrics-port 0 --hold 170 >"$tmp/demo.out" 2>&1 &
demo_pid=$!
demo_holding() {
  kill -0 "$demo_pid" 2>/dev/null || fail "the demo exited early"
  grep -q '^metrics: holding' "$tmp/demo.out"
}
wait_for 90 "the demo to finish training" demo_holding
port=$(sed -n 's|^metrics: serving http://127\.0\.0\.1:\([0-9]*\)/metrics$|\1|p' "$tmp/demo.out")
[[ -n $port ]] || fail "the demo printed no metrics port"
read -r want_steps want_loss < <(sed -n \
  's/^  metrics *stepgraph_steps_completed_total \([0-9]*\), stepgraph_demo_loss \(.*\)$/\1 \2/p' "$tmp/demo.out")
[[ -n $want_steps && -n $want_loss ]] || fail "the demo printed no final metrics line"
grep -q '^OK: replayed training is bit-identical' "$tmp/demo.out" || fail "the demo's check failed"
echo "demo: port $port, $want_steps steps completed, final loss $want_loss"

# 2. The endpoint's text passes promtool's checks (format and naming lints).
curl -sf "http://127.0.0.1:$port/metrics" >"$tmp/metrics.txt" || fail "GET /metrics failed"
"$promtool" check metrics <"$tmp/metrics.txt" || fail "promtool check metrics rejected the endpoint's text"
echo "promtool check metrics: OK ($(grep -vc '^#' "$tmp/metrics.txt") samples)"

# 3. Prometheus on a free localhost port, scraping the demo every second,
#    with its own storage.
prom_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$tmp/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: stepgraph_demo
    static_configs:
      - targets: ["127.0.0.1:$port"]
YAML
"$prometheus" --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/data" \
  --web.listen-address="127.0.0.1:$prom_port" >"$tmp/prometheus.log" 2>&1 &
prom_pid=$!

# 4. Query its HTTP API until it has scraped the demo (bounded).
query() {  # prints the value of the instant query $1, or nothing
  curl -sf --get --data-urlencode "query=$1" "http://127.0.0.1:$prom_port/api/v1/query" |
    python3 -c 'import json, sys
r = json.load(sys.stdin)["data"]["result"]
print(r[0]["value"][1] if r else "")' 2>/dev/null || true
}
scraped() {
  kill -0 "$prom_pid" 2>/dev/null || fail "prometheus exited"
  [[ -n $(query 'stepgraph_steps_completed_total{job="stepgraph_demo"}') ]]
}
wait_for 60 "prometheus to scrape the demo" scraped
got_steps=$(query 'stepgraph_steps_completed_total{job="stepgraph_demo"}')
got_loss=$(query 'stepgraph_demo_loss{job="stepgraph_demo"}')
got_up=$(query 'up{job="stepgraph_demo"}')
echo "prometheus: up $got_up, stepgraph_steps_completed_total $got_steps, stepgraph_demo_loss $got_loss"
[[ $got_up == 1 ]] || fail "the target is not up"
python3 - "$want_steps" "$got_steps" "$want_loss" "$got_loss" <<'PY' || fail "prometheus's values differ from the demo's"
import sys
want_steps, got_steps, want_loss, got_loss = sys.argv[1:]
assert float(got_steps) == float(want_steps), (got_steps, want_steps)
# The demo prints the float32 loss with 9 significant digits (round-trips a float32).
assert abs(float(got_loss) - float(want_loss)) <= 1e-8 * abs(float(want_loss)), (got_loss, want_loss)
PY

# 5. The demo stops cleanly on SIGTERM (server shut down, exit status 0).
kill -TERM "$demo_pid"
for _ in $(seq 100); do kill -0 "$demo_pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$demo_pid" 2>/dev/null && fail "the demo did not stop within 10 s of SIGTERM"
demo_rc=0
wait "$demo_pid" || demo_rc=$?
demo_pid=""
[[ $demo_rc -eq 0 ]] || fail "the demo exited with status $demo_rc"
grep -q 'scrape(s) served; stopping' "$tmp/demo.out" || fail "the demo did not report stopping"
echo "OK: prometheus scraped the demo's counter and gauge as printed; promtool accepts the endpoint"
