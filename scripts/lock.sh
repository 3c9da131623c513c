#!/usr/bin/env bash
# Pin what the image installs, with hashes, in requirements.lock: every runtime dependency in
# pyproject.toml, their dependencies, and the build backend ([build-system] requires), resolved
# with uv for Python 3.11 on any platform. The Dockerfile installs exactly these, hashes checked.
# Run it after changing a dependency, and to take updates:  bash scripts/lock.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet "uv>=0.5"

build_requires="$(.venv/bin/python -c '
import tomllib
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))')"

printf '%s\n' "$build_requires" | .venv/bin/uv pip compile pyproject.toml - \
    --universal --python-version 3.11 --generate-hashes --quiet \
    --custom-compile-command "bash scripts/lock.sh" \
    --output-file requirements.lock
echo "requirements.lock: $(grep -c '^[A-Za-z0-9]' requirements.lock) packages pinned"
