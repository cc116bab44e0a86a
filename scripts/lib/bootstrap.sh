# Sourced by scripts/dev and scripts/check: make sure .venv exists and holds the pinned
# requirements. Reinstalls only when a requirements file changed (stamp in .venv).
ROOT="${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
VENV="$ROOT/.venv"
PYTHON_BIN="${PYTHON:-python3}"

bootstrap_say() { printf '[bootstrap] %s\n' "$*" >&2; }

if ! command -v "$PYTHON_BIN" >/dev/null 2>&1; then
  bootstrap_say "python3 not found: install Python 3.11+ first"; exit 1
fi
if ! "$PYTHON_BIN" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  bootstrap_say "Python 3.11+ is required, found $("$PYTHON_BIN" --version 2>&1)"; exit 1
fi
if [[ ! -x "$VENV/bin/python" ]]; then
  bootstrap_say "creating virtualenv in .venv"
  if ! "$PYTHON_BIN" -m venv "$VENV" 2>/dev/null; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
      bootstrap_say "installing python3-venv (apt-get)"
      apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      "$PYTHON_BIN" -m venv "$VENV"
    else
      bootstrap_say "cannot create a virtualenv: install python3-venv"; exit 1
    fi
  fi
fi
STAMP="$VENV/.requirements.sha256"
WANT="$(cat "$ROOT"/requirements-orchestrator.txt "$ROOT"/requirements-dev.txt | sha256sum | cut -d' ' -f1)"
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$WANT" ]]; then
  bootstrap_say "installing pinned requirements into .venv (first run takes a minute)"
  # (grep drops a warning some machines' pip.conf triggers for a missing local index)
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip 2>&1 \
    | { grep -v "is neither a file nor a directory" || true; } >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$ROOT/requirements-dev.txt" 2>&1 \
    | { grep -v "is neither a file nor a directory" || true; } >&2
  "$VENV/bin/python" -m pip check >/dev/null
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
