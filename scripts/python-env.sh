#!/usr/bin/env bash
# Makes the repository's Python environment for the deployment-config tests (envoy/tests) and prints its python.
#
# Creates .venv at the repository root if it is missing (or broken), installs envoy/requirements.txt into it
# quietly, and prints the path of the venv's python on stdout (everything else goes to stderr). Idempotent: the
# install runs again only when envoy/requirements.txt changed since the last successful one, so calling this on
# every test run costs nothing. Set PYTHON to choose the interpreter the venv is made from (default: python3).
#
#   py=$(scripts/python-env.sh) && "$py" -m pytest envoy/tests -q
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
venv="$root/.venv"
requirements="$root/envoy/requirements.txt"
python=${PYTHON:-python3}

if ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
    echo "python-env: creating $venv" >&2
    "$python" -m venv --clear "$venv" >&2
fi

stamp="$venv/.warden-requirements.sha256"
want=$(sha256sum "$requirements" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    echo "python-env: installing envoy/requirements.txt into $venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$requirements" >&2
    echo "$want" >"$stamp"
fi

echo "$venv/bin/python"
