#!/usr/bin/env bash
# The whole test suite on a fresh machine: sets up .venv, makes sure Chromium, Redis and
# PostgreSQL are installed (installs them with apt when root, else says what to install),
# then runs ruff, mypy, import-linter and pytest, stopping at the first failure.
#
#   scripts/test.sh [PYTEST ARGS...]      e.g. scripts/test.sh -m 'not slow'
#
# The tests start their own private PostgreSQL and Redis on free ports on 127.0.0.1.
# Exit code: the first failing step's, else pytest's (5, no tests collected, is a failure).
set -euo pipefail

# shellcheck source=scripts/serve.sh
source "$(dirname "${BASH_SOURCE[0]}")/serve.sh"
cd "$REPO_ROOT"

ensure_chromium() {
    local chromium="${CHATD_TEST_CHROMIUM:-/usr/bin/chromium}"
    [[ -x $chromium ]] && return 0
    [[ -z ${CHATD_TEST_CHROMIUM:-} ]] || die "CHATD_TEST_CHROMIUM=$chromium is not an executable"
    apt_install chromium && [[ -x $chromium ]] ||
        die "Chromium not found at $chromium: install it (Debian: sudo apt-get install chromium), or set CHATD_TEST_CHROMIUM to its path"
}

ensure_redis() {
    if [[ -n ${CHATD_TEST_REDIS_SERVER:-} ]]; then
        [[ -x $CHATD_TEST_REDIS_SERVER ]] || die "CHATD_TEST_REDIS_SERVER=$CHATD_TEST_REDIS_SERVER is not an executable"
    elif ! command -v redis-server >/dev/null; then
        apt_install redis-server ||
            die "redis-server not found: install it (Debian: sudo apt-get install redis-server)"
    fi
    command -v redis-cli >/dev/null || apt_install redis-tools ||
        die "redis-cli not found: install it (Debian: sudo apt-get install redis-tools)"
}

# Prints the directory with initdb and postgres, as tests/support/postgres.py finds it.
pg_bin_dir() {
    local initdb
    if [[ -n ${CHATD_TEST_PG_BIN:-} ]]; then
        [[ -x $CHATD_TEST_PG_BIN/initdb ]] && echo "$CHATD_TEST_PG_BIN"
        return
    fi
    for initdb in $(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -t/ -k5 -rn) \
        "$(command -v initdb || true)"; do
        if [[ -x $initdb && -x "$(dirname "$initdb")/postgres" ]]; then
            dirname "$initdb"
            return 0
        fi
    done
    return 1
}

ensure_postgres() {
    [[ -z ${CHATD_TEST_PG_URL:-} ]] || return 0 # the tests use that server instead
    pg_bin_dir >/dev/null && return 0
    [[ -z ${CHATD_TEST_PG_BIN:-} ]] || die "CHATD_TEST_PG_BIN=$CHATD_TEST_PG_BIN holds no initdb"
    { apt_install postgresql && pg_bin_dir >/dev/null; } ||
        die "PostgreSQL server binaries (initdb, postgres) not found: install them (Debian: sudo apt-get install postgresql), or set CHATD_TEST_PG_BIN to their directory"
}

# run TITLE COMMAND...: a header, then the command; on failure, say which step failed.
run() {
    local title="$1" rc=0
    shift
    echo
    echo "==> $title"
    "$@" || rc=$?
    if [[ $rc != 0 ]]; then
        echo "==> FAILED: $title (exit $rc)" >&2
        exit "$rc"
    fi
}

ensure_venv
ensure_chromium
ensure_redis
ensure_postgres
export PATH="$VENV/bin:$PATH"

run "ruff check" ruff check .
run "ruff format --check" ruff format --check .
run "mypy" mypy protocol persistence moderation chatd
run "lint-imports" lint-imports --no-cache

echo
echo "==> pytest $*"
rc=0
pytest "$@" || rc=$?
if [[ $rc == 5 ]]; then
    echo "==> FAILED: pytest collected no tests" >&2
elif [[ $rc != 0 ]]; then
    echo "==> FAILED: pytest (exit $rc)" >&2
fi
exit "$rc"
