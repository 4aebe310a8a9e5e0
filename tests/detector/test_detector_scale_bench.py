"""bench/detector_scale.py (the lower-scale rule tried on a pipeline instance) runs end to end.

The rule was measured and not built (see the module's docstring); this keeps the script that
measured it working. On mpf_video_01 the tracked faces' crops always hold a face under 48
detector pixels, so the rule never fires there and the posts are the unchanged pipeline's.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"

pytestmark = [pytest.mark.slow, pytest.mark.media]


def test_reduce_mode_runs_on_mpf_and_the_rule_leaves_its_posts(
        shared_data: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    mod = sys.modules.get("detector_scale") or importlib.import_module("detector_scale")
    out = mod.main(["reduce", "--clips", "mpf", "--floors", "48", "--repeat", "1"])
    off, on = out["mpf"][None], out["mpf"][48.0]
    assert on[1]["crops"] == 33 and on[1]["reduced"] == 0  # the faces-only runs' crops
    assert on[3] == off[3] and len(off[3]) == 5  # the same 5 posts
    assert off[0] > 0 and on[4] > 0
    assert "| 48 |" in capsys.readouterr().out
