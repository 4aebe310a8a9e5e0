#!/usr/bin/env bash
# The README's first command: set everything up, then run the main job on the
# embedded backend (no external server, no test media needed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
exec python -u -m videodetector.demo "$@"
