#!/bin/bash
# Runs inside scripts/fresh-machine's Debian root and network namespace: the README's two
# commands, as a newcomer pastes them. Arguments: the proxy port, then pytest arguments for the
# check. Prints "[fresh] ..." summary lines; exits non-zero when either command fails.
set -uo pipefail
PROXY="http://127.0.0.1:$1"; shift
export http_proxy="$PROXY" https_proxy="$PROXY" HTTP_PROXY="$PROXY" HTTPS_PROXY="$PROXY"
export no_proxy=127.0.0.1,localhost,::1 NO_PROXY=127.0.0.1,localhost,::1
# The system trust store (fresh-machine adds the host's extra anchors to it): pip and node
# otherwise use their own bundles.
export PIP_CERT=/etc/ssl/certs/ca-certificates.crt NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
say() { printf '[fresh] %s\n' "$*"; }
cd /root/pedi-orchestrator
API=http://127.0.0.1:9000
failed=0

json() { python3 -c "import sys, json; print(json.load(sys.stdin)$1)"; }
poll_done() {  # poll_done URL SECONDS -> prints the final status
  local status=""
  for _ in $(seq 1 "$2"); do
    status="$(curl -s "$1" | json '["status"]' 2>/dev/null)"
    [[ "$status" == completed || "$status" == failed ]] && break
    sleep 1
  done
  echo "$status"
}

# --- 1. ./scripts/dev ----------------------------------------------------------------------
say "1. ./scripts/dev (in the background, from this script: SIGINT arrives ignored)"
t0=$SECONDS
./scripts/dev >/root/dev.log 2>&1 &
dev=$!
ready=0
for _ in $(seq 1 1200); do
  kill -0 "$dev" 2>/dev/null || break
  curl -sf "$API/readyz" >/dev/null 2>&1 && { ready=1; break; }
  sleep 1
done
if ((ready)); then
  say "dev: ready in $((SECONDS - t0)) s"
  t1=$SECONDS
  job="$(curl -s -X POST "$API/api/submit" -H 'content-type: application/json' \
    -d '{"age_months": 24, "observations": "Does not point to show things and says no words yet."}')"
  id="$(echo "$job" | json '["job_id"]')"
  status="$(poll_done "$API/api/status/$id" 60)"
  say "dev: submitted case $id -> $status in $((SECONDS - t1)) s ($(curl -s "$API/api/status/$id" | json '["result"]["risk_level"]' 2>/dev/null) risk, target $(curl -s "$API/api/status/$id" | json '["target"]' 2>/dev/null))"
  [[ "$status" == completed ]] || failed=1
  task="$(curl -s -X POST "$API/route_task" -H 'content-type: application/json' \
    -d '{"task_type": "echo", "payload": {"n": 1}, "consent": true}')"
  tid="$(echo "$task" | json '["task_id"]' 2>/dev/null)"
  tstatus="$(poll_done "$API/task/$tid" 60)"
  say "dev: /route_task $tid -> ${tstatus:-$task}"
  [[ "$tstatus" == completed ]] || failed=1
  metrics="$(grep -oE 'localhost:[0-9]+/metrics +\(worker\)' /root/dev.log | grep -oE '[0-9]+' | head -1)"
  say "dev: worker metrics on :$metrics: $(curl -s "http://127.0.0.1:$metrics/metrics" | grep -c '^pedi_') pedi_ samples"
else
  say "dev: NOT ready in $((SECONDS - t0)) s; log tail:"; tail -30 /root/dev.log; failed=1
fi
t2=$SECONDS
kill -INT "$dev" 2>/dev/null
for _ in $(seq 1 60); do kill -0 "$dev" 2>/dev/null || break; sleep 1; done
if kill -0 "$dev" 2>/dev/null; then say "dev: still running 60 s after SIGINT"; failed=1; kill -TERM "$dev"; fi
wait "$dev"; dev_rc=$?
left="$(ls -d /tmp/pedi-dev-* 2>/dev/null | wc -l)"
procs="$(ps -eo args= 2>/dev/null | grep -v '^grep' | grep -cE 'modelreasoner|uvicorn|redis-server' || true)"
say "dev: SIGINT -> exit $dev_rc in $((SECONDS - t2)) s; pedi-dev-* folders left: $left; stack processes left: $procs"
((left == 0 && procs == 0)) || failed=1

# --- 2. CI=true ./scripts/check ------------------------------------------------------------
say "2. CI=true ./scripts/check $*"
t3=$SECONDS
CI=true ./scripts/check "$@" >/root/check.log 2>&1; check_rc=$?
grep -E '^\[(install-tools|check)\]' /root/check.log | sed 's/^/[fresh]   /'
summary="$(grep -E '^=+ .*(passed|failed|error|skipped).* =+$' /root/check.log | tail -1)"
say "check: exit $check_rc in $((SECONDS - t3)) s: ${summary:-$(tail -3 /root/check.log | tr '\n' ' ')}"
grep -E '^(FAILED|ERROR) ' /root/check.log | head -20 | sed 's/^/[fresh]   /'
((check_rc == 0)) || { tail -40 /root/check.log; failed=1; }
left="$(ls -d /tmp/pedi-* 2>/dev/null | wc -l)"
procs="$(ps -eo args= 2>/dev/null | grep -v '^grep' | grep -cE 'postgres|redis-server|chromium' || true)"
say "check: /tmp/pedi-* left: $left; postgres/redis/chromium processes left: $procs"
((left == 0 && procs == 0)) || failed=1
exit "$failed"
