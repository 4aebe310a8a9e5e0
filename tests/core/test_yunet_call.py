"""YuNetDetector.detect's cheaper call (issue 10) finds exactly what the former one did.

The former ``detect`` is kept in ``yunet_former.py`` as ``former_detect`` (a verbatim copy
of the code it replaced, on the same onnxruntime session): a uint8 canvas,
``transpose().astype()``, output names fetched per call, every cell of every map scored. The
detector now writes the blob into a reused buffer, caches the names and scores only cells
that can reach the threshold; its detections must be the same bit for bit, on real frames,
on crops of them at the scales the pipeline uses, after larger and smaller inputs (the reused
buffer's padding) and from threads.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import shared_file
from tests.core.yunet_former import former_detect, former_nms
from videodetector.core.detections import Detections
from videodetector.core.models import YuNetDetector, input_blob, nms


def assert_same(got: Detections, want: Detections) -> None:
    assert got.xyxy.tobytes() == want.xyxy.tobytes()
    assert got.score.tobytes() == want.score.tobytes()
    assert got.landmarks.tobytes() == want.landmarks.tobytes()


def frame_of(rel: str, index: int) -> np.ndarray:
    cap = cv2.VideoCapture(str(shared_file(rel)))
    try:
        for _ in range(index + 1):
            ok, frame = cap.read()
            assert ok, f"{rel} has no frame {index}"
    finally:
        cap.release()
    return frame


@pytest.fixture(scope="module")
def det() -> YuNetDetector:
    return YuNetDetector(threads=1)


@pytest.fixture(scope="module")
def frames() -> dict[str, np.ndarray]:
    return {"mpf": frame_of("clips_faces/mpf_video_01.mp4", 30),
            "grid": frame_of("clips_faces/grid_bbaf2n.mpg", 20)}


def test_real_frames_give_the_former_detections(det, frames):
    """Whole frames at the detector's own scale (mpf 640x480 at 1, GRID 360x288 enlarged
    1.78x), at half scale (shrunk) and a lower threshold (more candidates near it)."""
    low = YuNetDetector(score_threshold=0.3, threads=1)
    found = 0
    for img in frames.values():
        for d, scale in ((det, None), (det, 0.5), (low, None), (det, 1.3)):
            want = former_detect(d, img, scale)
            assert_same(d.detect(img, scale=scale), want)
            found += len(want)
    assert found >= 8  # the frames have faces: the comparison is not of empty results


def test_crops_around_faces_and_at_the_edges_give_the_former_detections(det, frames):
    """Crops as the pipeline makes them (a view into the frame, at the frame's scale), cut
    through a face, then a large input followed by a smaller one (the reused buffer's
    padding must be zero again)."""
    img = frames["mpf"]
    whole = former_detect(det, img)
    assert len(whole) >= 2
    for x1, y1, x2, y2 in whole.xyxy.astype(int):
        cx = (x1 + x2) // 2
        for crop in (img[max(0, y1 - 40):y2 + 40, max(0, x1 - 40):x2 + 40],
                     img[max(0, y1 - 20):y2 + 20, cx:x2 + 60],  # the face cut at its middle
                     img[y1:y2, x1:x2]):
            for scale in (1.0, 0.75):
                assert_same(det.detect(img, scale=1.0), whole)  # large, then small
                assert_same(det.detect(crop, scale=scale), former_detect(det, crop, scale))


@settings(max_examples=25, deadline=None)
@given(x=st.integers(0, 600), y=st.integers(0, 440), w=st.integers(1, 400),
       h=st.integers(1, 300), scale=st.sampled_from([None, 0.5, 0.8, 1.0, 1.7]))
def test_random_crops_give_the_former_detections(det, frames, x, y, w, h, scale):
    crop = frames["mpf"][y:y + h, x:x + w]
    assert_same(det.detect(crop, scale=scale), former_detect(det, crop, scale))


def test_threads_sharing_a_detector_get_their_own_detections(det, frames):
    """The buffer is filled and run under the lock: concurrent callers with inputs of
    different sizes each get the detections of their own image."""
    jobs = [(frames["mpf"], None), (frames["grid"], None), (frames["mpf"][100:300, 200:520], 1.0)]
    want = [former_detect(det, img, s) for img, s in jobs]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(4):
                img, s = jobs[i % 3]
                assert_same(det.detect(img, scale=s), want[i % 3])
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_input_blob_is_contiguous_nchw_zero_padded_and_reuses_its_buffer():
    rng = np.random.default_rng(1)
    big = rng.integers(1, 256, (64, 96, 3), np.uint8)
    blob, buf = input_blob(big, 64, 96, np.empty(0, np.float32))
    assert blob.flags.c_contiguous and blob.shape == (1, 3, 64, 96)
    np.testing.assert_array_equal(blob[0], big.transpose(2, 0, 1))
    small = rng.integers(1, 256, (20, 30, 3), np.uint8)
    blob2, buf2 = input_blob(small, 32, 64, buf)
    assert buf2 is buf and np.shares_memory(blob2, buf)  # no new array for a smaller input
    want = np.zeros((3, 32, 64), np.float32)
    want[:, :20, :30] = small.transpose(2, 0, 1)
    np.testing.assert_array_equal(blob2[0], want)  # the larger input's values are gone


class RecordingSession:
    """The detector's session, recording what each run is given and get_outputs calls."""

    def __init__(self, session: object) -> None:
        self._session = session
        self.blobs: list[np.ndarray] = []
        self.get_outputs_calls = 0

    def run(self, names, feeds):  # noqa: ANN001
        self.blobs.append(feeds["input"])
        return self._session.run(names, feeds)

    def get_outputs(self):  # noqa: ANN201
        self.get_outputs_calls += 1
        return self._session.get_outputs()


def test_a_call_runs_a_contiguous_reused_blob_without_fetching_output_names(frames):
    """What made a small call dear besides the graph: onnxruntime got an HWC-ordered
    float32 array (one more copy to make it NCHW), a new one per call, and the output
    names were rebuilt from get_outputs() per call."""
    det = YuNetDetector(threads=1)
    rec = RecordingSession(det._session)  # noqa: SLF001
    det._session = rec  # type: ignore[assignment]  # noqa: SLF001
    crop = frames["mpf"][100:260, 200:360]
    first = det.detect(crop, scale=1.0)
    second = det.detect(crop, scale=1.0)
    assert_same(second, first)
    a, b = rec.blobs
    assert a.flags.c_contiguous and a.shape == (1, 3, 160, 160)
    assert a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
    assert rec.get_outputs_calls == 0


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 80), seed=st.integers(0, 2**32 - 1),
       thr=st.sampled_from([0.0, 0.3, 0.5, 1.0]), ties=st.booleans())
def test_nms_keeps_what_the_row_by_row_pass_kept(n, seed, thr, ties):
    """Clustered boxes (many overlaps, as a detector's candidates), tied scores and
    degenerate boxes included."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 200, (max(1, n // 8), 2))[rng.integers(0, max(1, n // 8), n)]
    xy = centres + rng.normal(0, 6, (n, 2))
    wh = rng.uniform(0, 40, (n, 2))
    xyxy = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    score = (rng.integers(0, 3, n) / 3 if ties else rng.uniform(0, 1, n)).astype(np.float32)
    np.testing.assert_array_equal(nms(xyxy, score, thr), former_nms(xyxy, score, thr))


def test_nms_above_the_matrix_size_and_with_nan_is_the_row_by_row_pass():
    from videodetector.core.models import NMS_MATRIX_MAX

    rng = np.random.default_rng(3)
    n = NMS_MATRIX_MAX + 40
    xy = rng.uniform(0, 300, (n, 2))
    xyxy = np.concatenate([xy, xy + rng.uniform(5, 60, (n, 2))], axis=1).astype(np.float32)
    score = rng.uniform(0, 1, n).astype(np.float32)
    np.testing.assert_array_equal(nms(xyxy, score, 0.3), former_nms(xyxy, score, 0.3))
    xyxy[::7, 2] = np.nan  # a NaN IoU suppresses, as the row-wise pass's "<=" did
    small, s = xyxy[:60], score[:60]
    np.testing.assert_array_equal(nms(small, s, 0.3), former_nms(small, s, 0.3))
