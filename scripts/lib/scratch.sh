# Sourced by scripts/check: one private temporary folder per run (TMPDIR), removed on exit
# together with any process still running from it (a throwaway PostgreSQL cluster, a private
# redis-server, a browser profile), even when pytest was killed. Only what lives under this run's
# own folder is touched: never a daemon the machine already had.
SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/pedi-check-XXXXXX")"
chmod 0755 "$SCRATCH"   # a throwaway cluster runs as the postgres user, inside it
export TMPDIR="$SCRATCH"

scratch_pids() {  # processes whose command line names a path in $SCRATCH (the pattern comes
  # from a file descriptor, so grep's own command line does not match)
  grep -laF -f <(printf '%s\n' "$SCRATCH/") /proc/[0-9]*/cmdline 2>/dev/null \
    | awk -F/ -v self="$$" '$3 != self { print $3 }' || true
}

scratch_cleanup() {
  set +e   # clean up as much as possible, whatever fails
  local data pg_ctl pids
  for data in "$SCRATCH"/pedi-pg-*/data; do
    [[ -f "$data/postmaster.pid" ]] || continue
    pg_ctl="$(command -v pg_ctl || ls /usr/lib/postgresql/*/bin/pg_ctl 2>/dev/null | sort -V | tail -1)"
    if [[ -n "$pg_ctl" ]]; then
      if [[ $(id -u) -eq 0 ]] && id postgres >/dev/null 2>&1; then
        runuser -u postgres -- "$pg_ctl" -D "$data" -m immediate -w stop >/dev/null 2>&1 || true
      else
        "$pg_ctl" -D "$data" -m immediate -w stop >/dev/null 2>&1 || true
      fi
    fi
  done
  pids="$(scratch_pids)"
  if [[ -n "$pids" ]]; then
    printf '[check] stopping processes left in %s: %s\n' "$SCRATCH" "$(echo $pids)" >&2
    kill -TERM $pids 2>/dev/null || true
    sleep 2
    pids="$(scratch_pids)"
    [[ -z "$pids" ]] || kill -KILL $pids 2>/dev/null || true
  fi
  rm -rf "$SCRATCH"
}
trap scratch_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# run_in_scratch CMD...: run CMD (the test session) so that Ctrl-C and SIGTERM reach it and the
# cleanup above still runs after it: CMD runs as a job in its own process group (job control on,
# so it does not inherit an ignored SIGINT), and this shell forwards the signal and waits for it.
run_in_scratch() {
  local pid rc
  set -m
  "$@" &
  pid=$!
  set +m
  trap 'kill -INT "$pid" 2>/dev/null' INT
  trap 'kill -TERM "$pid" 2>/dev/null' TERM
  while :; do
    rc=0
    wait "$pid" || rc=$?
    kill -0 "$pid" 2>/dev/null || break   # a forwarded signal interrupted the wait: wait again
  done
  trap 'exit 130' INT
  trap 'exit 143' TERM
  return "$rc"
}
