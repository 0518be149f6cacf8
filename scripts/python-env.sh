#!/usr/bin/env bash
# Makes the repository's Python environment for the tests and prints its python.
#
# Creates .venv at the repository root if it is missing (or broken), installs every test requirements file into it
# quietly (envoy/requirements.txt: the deployment-config tests; host-tests/tests/requirements.txt: tokens minted by
# independent JWT libraries, MCP clients), and prints the path of the venv's python on stdout (everything else goes
# to stderr). Idempotent: the install runs again only when a requirements file changed since the last successful
# one, so calling this on every test run costs nothing. Set PYTHON to choose the interpreter the venv is made from
# (default: python3).
#
#   py=$(scripts/python-env.sh) && "$py" -m pytest envoy/tests -q
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
venv="$root/.venv"
requirements=()
for f in envoy/requirements.txt host-tests/tests/requirements.txt; do
    [ -f "$root/$f" ] && requirements+=("$root/$f")
done
python=${PYTHON:-python3}

if ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
    echo "python-env: creating $venv" >&2
    "$python" -m venv --clear "$venv" >&2
fi

stamp="$venv/.warden-requirements.sha256"
want=$(cat "${requirements[@]}" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    echo "python-env: installing ${requirements[*]#"$root/"} into $venv" >&2
    args=()
    for f in "${requirements[@]}"; do args+=(-r "$f"); done
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input "${args[@]}" >&2
    echo "$want" >"$stamp"
fi

echo "$venv/bin/python"
