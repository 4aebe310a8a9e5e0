"""The POST request for one snapshot, in the fkvideo_detector format (SDK 2.6 manual, 5.4).

A multipart/form-data POST to ``api_url + request_url`` with::

    Authorization: Token <api-token>       (omitted when the token is empty)
    Idempotency-Key: <snapshot key>        (a retried snapshot is stored once)
    <--headers ...>                        (extra headers)

    <--body fields>                        one part per field, in order; a multi-valued
                                           field is sent as one part, values joined by ','
                                           (e.g. galleries=g1,g2), as the -F form of 5.4
    cam_id=<camera id>
    timestamp=<ISO 8601 capture time>
    bbox=[[x1,y1,x2,y2]]
    detectorParams={"score": .., "direction_score": .., "track_id": ..,
                    "run_id": ..  (the daemon run: track ids restart with it),
                    "track": [[x, y], ...]  (with --send-track),
                    "label": "realtime"|"offline"  (with --realtime1844)}
    <img-arg>=@<frame>.jpeg                the full frame; omitted with --only-norm
    face0=@<frame>_norm.png                the normalized face
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from videodetector import __version__
from videodetector.core.naming import path_component
from videodetector.detector.snapshot import Snapshot

Pairs = tuple[tuple[str, str], ...]
FilePart = tuple[str, tuple[str, bytes, str]]  # field, (file name, content, MIME type)

USER_AGENT = f"fkvideo_detector/{__version__} (videodetector)"


class PostSettings(Protocol):
    """The part of DetectorConfig that shapes a request (tests may pass any such object)."""

    api_url: str
    api_token: str
    request_url: str
    img_arg: str
    headers: Pairs
    body: Pairs
    send_track: bool
    realtime1844: bool
    only_norm: bool


@dataclass(frozen=True)
class PreparedPost:
    """Everything ``requests.post`` needs; ``data`` parts precede ``files`` parts."""

    url: str
    headers: Mapping[str, str]
    data: Pairs
    files: tuple[FilePart, ...]


def post_url(api_url: str, request_url: str) -> str:
    return api_url.rstrip("/") + "/" + request_url.lstrip("/")


def detector_params(snap: Snapshot, send_track: bool, realtime1844: bool) -> dict[str, object]:
    params: dict[str, object] = {
        "score": snap.score,
        "direction_score": snap.direction_score,
        "track_id": snap.track_id,
    }
    if snap.run_id:  # the backend keys a track's person by (cam_id, run_id, track_id)
        params["run_id"] = snap.run_id
    if send_track:
        params["track"] = [[x, y] for x, y in snap.track]
    if realtime1844 and snap.label:
        params["label"] = snap.label
    return params


def _file_stem(snap: Snapshot) -> str:
    return f"{path_component(snap.cam_id, 'cam')}_{snap.track_id}_{snap.seq}"


def build_request(snap: Snapshot, cfg: PostSettings) -> PreparedPost:
    headers = {name: value for name, value in cfg.headers}
    headers["User-Agent"] = USER_AGENT
    if cfg.api_token:
        headers["Authorization"] = f"Token {cfg.api_token}"
    headers["Idempotency-Key"] = snap.idempotency_key
    x1, y1, x2, y2 = snap.bbox
    data = (
        *cfg.body,
        ("cam_id", snap.cam_id),
        ("timestamp", snap.timestamp.isoformat()),
        ("bbox", json.dumps([[x1, y1, x2, y2]], separators=(",", ":"))),
        ("detectorParams", json.dumps(detector_params(snap, cfg.send_track, cfg.realtime1844))),
    )
    stem = _file_stem(snap)
    files: list[FilePart] = []
    if snap.frame_jpeg is not None and not cfg.only_norm:
        files.append((cfg.img_arg, (f"{stem}.jpeg", snap.frame_jpeg, "image/jpeg")))
    files.append(("face0", (f"{stem}_norm.png", snap.face_png, "image/png")))
    return PreparedPost(
        url=post_url(cfg.api_url, cfg.request_url),
        headers=headers,
        data=data,
        files=tuple(files),
    )
