#!/usr/bin/env bash
# Install everything the tests need into .venv, then lint, type-check and run the whole suite
# on SQLite and on PostgreSQL. Usage: bash scripts/test.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
POSTGRES_URL="${TEST_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/test}"

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'

postgres_up() {
    .venv/bin/python - "$POSTGRES_URL" <<'PY'
import sys, psycopg
try:
    psycopg.connect(sys.argv[1], connect_timeout=3).close()
except Exception as error:
    print(f"PostgreSQL not reachable: {error}", file=sys.stderr)
    sys.exit(1)
PY
}

if ! postgres_up 2>/dev/null; then
    if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
        echo "starting PostgreSQL"
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
        for _ in $(seq 1 30); do postgres_up 2>/dev/null && break; sleep 1; done
    fi
fi
if postgres_up; then
    run_postgres=1
elif [ "${CI:-}" = "true" ]; then
    echo "PostgreSQL is required in CI and could not be started" >&2
    exit 1
else
    echo "WARNING: PostgreSQL is not reachable at $POSTGRES_URL; running SQLite only" >&2
    run_postgres=0
fi

echo "== ruff"
.venv/bin/ruff check .
echo "== mypy"
.venv/bin/mypy
echo "== layers"
.venv/bin/lint-imports --no-cache | tail -n 4
# The two databases' runs go side by side: most of a run waits on sockets and subprocesses.
logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
DATABASE_URL="" .venv/bin/pytest -q -p no:cacheprovider "$@" >"$logs/sqlite" 2>&1 &
sqlite_run=$!
if [ "$run_postgres" = 1 ]; then
    DATABASE_URL="$POSTGRES_URL" .venv/bin/pytest -q -p no:cacheprovider "$@" >"$logs/postgres" 2>&1 &
    postgres_run=$!
fi
failed=0
wait "$sqlite_run" || failed=1
echo "== tests on SQLite"
cat "$logs/sqlite"
if [ "$run_postgres" = 1 ]; then
    wait "$postgres_run" || failed=1
    echo "== tests on PostgreSQL"
    cat "$logs/postgres"
fi
exit "$failed"
