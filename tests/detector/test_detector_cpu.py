"""CPU of the face detector's runs outside the work itself."""

from __future__ import annotations

from videodetector.core.models import YuNetDetector


def test_detector_threads_sleep_between_runs():
    """onnxruntime's intra-op threads spin after every parallel op by default: on a 2-core
    host that also decodes and imports, YuNet with 2 threads cost twice the CPU per run
    (mpf_video_01: ~30 ms against ~15 ms). The detector's session must not spin."""
    detector = YuNetDetector(threads=2)
    opts = detector._session.get_session_options()
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert opts.intra_op_num_threads == 2
