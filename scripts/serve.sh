#!/usr/bin/env bash
# Run a chatd node on its built-in defaults (127.0.0.1:8000, SQLite file chatd.db, the
# in-process broker), after setting up .venv from requirements.lock.
#
#   scripts/serve.sh [--config FILE] [--host H] [--port N]
#
# The install is skipped while requirements.lock and pyproject.toml are unchanged (a hash
# of both is kept in .venv/). scripts/test.sh sources this file for ensure_venv.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO_ROOT/.venv"
STAMP="$VENV/.chatd-install-stamp"

die() {
    echo "error: $*" >&2
    exit 1
}

is_root() { [[ "$(id -u)" == 0 ]]; }

APT_UPDATED=0
# apt_install PACKAGE...: install with apt when we are root on a machine that has it;
# returns non-zero (installing nothing) otherwise, so the caller can say what is missing.
apt_install() {
    is_root && command -v apt-get >/dev/null || return 1
    echo "==> apt-get install $*"
    if [[ $APT_UPDATED == 0 ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null || return 1
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" </dev/null
}

# The Python to build .venv with: 3.11, as pyproject.toml requires.
find_python() {
    local candidate
    for candidate in ${CHATD_PYTHON:-} python3.11 python3; do
        command -v "$candidate" >/dev/null || continue
        if "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

ensure_venv() {
    local python want
    if [[ ! -x "$VENV/bin/python" ]]; then
        python="$(find_python)" || { apt_install python3 python3-venv && python="$(find_python)"; } ||
            die "Python 3.11 not found: install it (Debian 12: apt-get install python3 python3-venv), or set CHATD_PYTHON to a python3.11"
        echo "==> creating .venv with $python"
        if ! "$python" -m venv "$VENV"; then
            rm -rf "$VENV"
            # Debian's python3 needs python3-venv for `python3 -m venv` (ensurepip).
            { apt_install python3-venv && "$python" -m venv "$VENV"; } ||
                die "could not create .venv: install python3-venv (Debian: apt-get install python3-venv)"
        fi
    fi
    "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' ||
        die "$VENV is not a Python 3.11 virtualenv: remove it and run this again"
    want="$(cat "$REPO_ROOT/requirements.lock" "$REPO_ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
    if [[ -f $STAMP && "$(cat "$STAMP")" == "$want" ]]; then
        return 0
    fi
    echo "==> installing requirements.lock into .venv"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        --require-hashes -r "$REPO_ROOT/requirements.lock"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e "$REPO_ROOT"
    echo "$want" >"$STAMP"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    ensure_venv
    exec "$VENV/bin/chatd" serve "$@"
fi
