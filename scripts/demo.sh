#!/usr/bin/env bash
# Set-up and demo: installs tddfa (no PyTorch) and aligns a sample photo into out/.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -e ".[export]"
if [ -z "${TDDFA_HOME:-}" ] && [ -d ../shared/assets ]; then
  export TDDFA_HOME="$(cd ../shared/assets && pwd)"
fi
sample=${1:-../shared/samples/trump_hillary.jpg}
tddfa align "$sample" -o out --render mesh,depth,pncc,pose,uv --export obj
echo "outputs:"
ls -1 out
