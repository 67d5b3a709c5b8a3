#!/usr/bin/env bash
# Runs the official WorkOS SDKs (Node and Python) against audit-testkit.
# Usage: AUDIT_TESTKIT_BIN=/abs/path/to/audit-testkit sdk-tests/run.sh
# Installs the pinned SDKs when missing (npm ci; python3 -m venv + pip install -r).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ -z "${AUDIT_TESTKIT_BIN:-}" ]]; then
  echo "set AUDIT_TESTKIT_BIN to the absolute path of the audit-testkit binary" >&2
  exit 2
fi
if [[ ! -x "$AUDIT_TESTKIT_BIN" ]]; then
  echo "AUDIT_TESTKIT_BIN=$AUDIT_TESTKIT_BIN is not an executable file" >&2
  exit 2
fi
export AUDIT_TESTKIT_BIN

if [[ ! -d "$here/node/node_modules/@workos-inc/node" ]]; then
  npm ci --prefix "$here/node"
fi
if [[ ! -x "$here/python/.venv/bin/python" ]] || ! "$here/python/.venv/bin/python" -c "import workos, pytest" 2>/dev/null; then
  python3 -m venv "$here/python/.venv"
  "$here/python/.venv/bin/pip" install -q -r "$here/python/requirements.txt"
fi

status=0
echo "== Node SDK" >&2
node --test "$here/node/" || status=1
echo "== Python SDK" >&2
"$here/python/.venv/bin/python" -m pytest -q "$here/python" || status=1
exit $status
