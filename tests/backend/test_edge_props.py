"""Property tests of the backend's request-field parsing (issue 7): whatever a client sends,
a parser either returns a value within its documented limits or raises BAD_PARAM (an
ApiError) naming the field — never another exception (which would be a 500)."""

from __future__ import annotations

import ipaddress
import json
import math
import os
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from videodetector.backend.cameras import MAX_REGION, camera_url, path_under, region
from videodetector.backend.errors import ApiError, echo_value
from videodetector.backend.fetch import address_allowed, networks
from videodetector.backend.params import (
    MAX_COORD,
    MAX_JSON_DEPTH,
    MAX_TEXT,
    Params,
    check_text,
    json_depth,
    load_json,
    parse_box,
)
from videodetector.backend.timeutil import parse_time

FAST = settings(max_examples=150, deadline=None)

numbers = st.one_of(st.integers(min_value=-(10**400), max_value=10**400),
                    st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(),
                    st.text(max_size=5))
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=4)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=3), inner, max_size=3)),
    max_leaves=30)


def nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


@FAST
@given(st.lists(numbers, min_size=0, max_size=5))
@example([float("nan"), 0, 10, 10])
@example([0, 0, 1e308, 1e308])
@example([0, 0, 10**400, 10])
def test_parse_box_is_finite_bounded_and_ordered_or_bad_param(item):
    try:
        box = parse_box("bbox", item)
    except ApiError as exc:
        assert exc.code == "BAD_PARAM" and exc.extra["param"] == "bbox"
        json.dumps(exc.body(), allow_nan=False)  # the error itself can be sent
        return
    x1, y1, x2, y2 = box
    assert all(math.isfinite(v) and abs(v) <= MAX_COORD for v in box)
    assert x2 > x1 and y2 > y1


@FAST
@given(json_values)
def test_boxes_param_never_fails_otherwise(value):
    for raw in (value, json.dumps(value)):
        try:
            boxes = Params({"bbox": raw}).boxes()
        except ApiError as exc:
            assert exc.extra["param"] == "bbox"
            json.dumps(exc.body(), allow_nan=False)
            continue
        assert boxes is None or all(len(b) == 4 for b in boxes)


regions = st.one_of(
    st.lists(st.one_of(st.integers(min_value=-5, max_value=10**25), st.booleans(),
                       st.floats(), st.text(max_size=3)), max_size=5),
    st.builds(lambda w, h, x, y: f"{w}x{h}+{x}+{y}", *[st.integers(0, 10**21)] * 4),
    st.text(max_size=80),
)


@FAST
@given(regions)
@example("1x1+5000+" + "9" * 20)
@example([16384, 16384, 0, 0])
def test_region_is_within_a_16384_frame_or_bad_param(value):
    try:
        stored = region("roi", value)
    except ApiError as exc:
        assert exc.extra["param"] == "roi"
        return
    if stored is None:
        return
    parsed = json.loads(stored)
    if isinstance(parsed, str):
        w, rest = parsed.split("x")
        h, x, y = rest.split("+")
        parsed = [int(w), int(h), int(x), int(y)]
    w, h, x, y = parsed
    assert 1 <= w and 1 <= h and x >= 0 and y >= 0
    assert x + w <= MAX_REGION and y + h <= MAX_REGION


@FAST
@given(st.integers(0, 40))
def test_json_deeper_than_the_limit_is_refused(depth):
    text = json.dumps({"a": nested(depth)})
    if depth + 1 <= MAX_JSON_DEPTH:
        assert json_depth(load_json(text)) == depth + 1
    else:
        with pytest.raises(ValueError, match="nested"):
            load_json(text)


def test_json_far_deeper_than_python_recursion_is_refused():
    with pytest.raises(ValueError, match="nested"):
        load_json("[" * 200_000 + "]" * 200_000)


@FAST
@given(st.text(max_size=50))
def test_load_json_raises_only_value_error(text):
    try:
        value = load_json(text)
    except ValueError:
        return
    json.dumps(value, allow_nan=False)  # what was accepted can be stored and sent back
    assert json_depth(value) <= MAX_JSON_DEPTH


@FAST
@given(st.one_of(st.text(max_size=MAX_TEXT + 20), numbers, st.lists(st.text(), max_size=2)))
@example("m" * (MAX_TEXT + 1))
@example("a\x00b")
def test_text_is_bounded_or_bad_param(value):
    try:
        text = check_text("meta", value)
    except ApiError as exc:
        assert exc.extra["param"] == "meta"
        json.dumps(exc.body(), allow_nan=False)
        return
    assert len(text) <= MAX_TEXT and "\x00" not in text


@FAST
@given(json_values)
def test_echoed_values_are_always_sendable(value):
    text = json.dumps({"value": echo_value(value)}, allow_nan=False)
    assert len(text) < 1000


@FAST
@given(st.one_of(st.floats(), st.integers(min_value=-(10**30), max_value=10**30),
                 st.text(max_size=40), st.datetimes().map(lambda d: d.isoformat())))
@example(1e20)
@example("0001-01-01T00:00:00+01:00")
def test_parse_time_returns_utc_in_range_or_bad_param(value):
    try:
        dt = parse_time("timestamp", value)
    except ApiError as exc:
        assert exc.extra["param"] == "timestamp"
        return
    assert dt.utcoffset().total_seconds() == 0
    dt.timestamp()


PRIVATE = ["127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16",
           "224.0.0.0/4", "0.0.0.0/8", "100.64.0.0/10", "240.0.0.0/4", "::1/128", "fc00::/7",
           "fe80::/10", "ff00::/8", "::ffff:127.0.0.0/104", "::ffff:10.0.0.0/104"]


@FAST
@given(st.sampled_from(PRIVATE), st.integers(min_value=0))
def test_non_public_addresses_are_never_fetched(cidr, offset):
    net = ipaddress.ip_network(cidr)
    ip = net[offset % net.num_addresses]
    assert not address_allowed(ip)
    assert address_allowed(ip, networks([cidr]))


@pytest.mark.parametrize("ip", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_are_fetched(ip):
    assert address_allowed(ipaddress.ip_address(ip))


path_parts = st.lists(st.sampled_from(["srv", "videos", "..", ".", "etc", "passwd", "", "a.mp4"]),
                      max_size=6)


@FAST
@given(path_parts, st.booleans())
def test_local_camera_files_stay_under_their_roots(parts, absolute):
    path = ("/" if absolute else "") + "/".join(parts)
    roots = (Path("/srv/videos"),)
    if path_under(path, roots):
        norm = os.path.normpath(path)
        assert norm == "/srv/videos" or norm.startswith("/srv/videos/")
        assert camera_url(path, roots) == path
    elif path:
        with pytest.raises(ApiError):
            camera_url(path, roots)
