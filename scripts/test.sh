#!/usr/bin/env bash
# The README's second command: set up, lint, and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ruff check videodetector tests bench examples
python -m pytest -q -rs "$@"
