"""bench/yunet_call.py runs: the phases of a YuNet call and the calls inside the pipeline.

It never asserts speed (the figures are measured by running the script in full); it checks
that the script times the steps it names and that its in-pipeline timing sees every call.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from tests.conftest import shared_file

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture
def yunet_call(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(BENCH))
    return sys.modules.get("yunet_call") or importlib.import_module("yunet_call")


def test_phases_name_the_former_and_the_new_steps(yunet_call, capsys):
    table = yunet_call.main(["phases", "--sizes", "64x64", "--n", "3"])
    steps = table["64x64"]
    assert {"canvas", "blob", "run", "get_outputs", "decode", "nms", "lock", "detect",
            "input_blob", "run_contiguous", "decode_new"} <= set(steps)
    assert all(v >= 0 for v in steps.values())
    assert "64x64" in capsys.readouterr().out


def test_inpipe_times_every_yunet_call_of_the_pipeline(yunet_call):
    shared_file("clips_faces/mpf_video_01.mp4")
    res = yunet_call.main(["inpipe", "--clips", "mpf"])["mpf"]
    assert res["calls"] > 0 and res["posts"] == len(res["post_list"]) > 0
    # session.run is inside detect: it cannot cost more than the call around it
    assert 0 < res["run_ms_per_call"] <= res["detect_ms_per_call"]


def test_sizes_are_checked(yunet_call):
    with pytest.raises(ValueError, match="at least 32x32"):
        yunet_call.parse_sizes("16x64")
