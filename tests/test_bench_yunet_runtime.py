"""bench/yunet_runtime.py runs in a tiny mode and measures what its notes rely on.

Speed is never asserted (it is measured by running the script in full); what is checked is
that every runtime runs YuNet's graph on a real frame, and that OpenVINO in f32 gives
onnxruntime's detections (the bench's bf16 figures are then about precision, not a bug in
the bench's OpenVINO wrapper)."""

from __future__ import annotations

import pytest

from tests.conftest import shared_file

pytest.importorskip("openvino")
pytestmark = [pytest.mark.slow, pytest.mark.media]


def test_sizes_smoke(bench, capsys: pytest.CaptureFixture[str]) -> None:
    shared_file("clips_faces/mpf_video_01.mp4")
    mod = bench("yunet_runtime")
    table = mod.main(["sizes", "--threads", "1", "--n", "2", "--shapes", "96x128"])
    row = table["1t 96x128"]
    for runtime in ("ort", "ov_f32", "ov_bf16", "ov_f32_static", "ov_bf16_static"):
        assert row[runtime] > 0, runtime
    assert "bf16 vs ort" in capsys.readouterr().out


def test_diff_openvino_f32_matches_onnxruntime(bench) -> None:
    shared_file("clips_faces/grid_bbaf2n.mpg")
    mod = bench("yunet_runtime")
    table = mod.main(["diff", "--clips", "grid", "--every", "25"])
    f32, bf16 = table["grid"]["ov_f32"], table["grid"]["ov_bf16"]
    assert f32["matched"] == 3 and f32["unmatched"] == 0  # frames 25, 50, 75: one talker each
    assert f32["box_px"] < 0.05 and f32["landmark_rel"] < 1e-3 and f32["score"] < 1e-4
    assert bf16["matched"] == 3


def test_shapes_option_refuses_what_yunet_cannot_take(bench) -> None:
    mod = bench("yunet_runtime")
    assert mod.parse_shapes("384x640,96x96") == ((384, 640), (96, 96))
    for bad in ("100x96", "0x32", "16x16"):
        with pytest.raises(ValueError, match=bad):
            mod.parse_shapes(bad)
