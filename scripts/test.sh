#!/usr/bin/env bash
# The test command (README): fast tests by default; pass -m slow or other pytest args to change.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -z "${TDDFA_HOME:-}" ] && [ -d ../shared/assets ]; then
  export TDDFA_HOME="$(cd ../shared/assets && pwd)"
fi
python3 -m pytest -ra "$@"
status=$?
# pytest exits 5 when it collected no test: that is a failure of the suite, not a pass
exit $status
