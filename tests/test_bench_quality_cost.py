"""bench/quality_cost.py runs in a tiny mode (speed is never asserted: it is measured by
running the script in full); its ``inpipe --check`` finds no face whose score differs from
the former code's on a shared clip, and would count one that did."""

from __future__ import annotations

import pytest

from tests.conftest import shared_file

pytestmark = [pytest.mark.slow, pytest.mark.media]


def test_parts_smoke(bench, capsys: pytest.CaptureFixture[str]) -> None:
    shared_file("clips_faces/grid_bbaf2n.mpg")
    mod = bench("quality_cost")
    assert mod.main(["parts", "--clips", "grid", "--frames", "4", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    for part in ("former: similarity x2", "now: aligned crop", "now: filters",
                 "former / now face_quality"):
        assert part in out, part


def test_inpipe_check_counts_differences(bench, monkeypatch, capsys) -> None:
    shared_file("clips_faces/grid_bbaf2n.mpg")
    mod = bench("quality_cost")
    clip = ["--clips", "clips_faces/grid_bbaf2n.mpg"]
    assert mod.main(["inpipe", "--check", *clip]) == 0
    assert ", 0 differ from the former" in capsys.readouterr().out

    from videodetector.core.quality import score

    real = score.face_quality

    def off_by_one_bit(*args):  # a score one ulp away must be counted
        import dataclasses
        import math

        q = real(*args)
        return dataclasses.replace(q, score=math.nextafter(q.score, 0.0))

    monkeypatch.setattr("videodetector.detector.pipeline.face_quality", off_by_one_bit)
    assert mod.main(["inpipe", "--check", *clip]) == 1
    assert ", 0 differ" not in capsys.readouterr().out
