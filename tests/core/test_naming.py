"""path_component: camera ids as spool folder names."""

from __future__ import annotations

import pytest

from videodetector.core.naming import path_component


@pytest.mark.parametrize("name", ["cam-1", "b1c2c46f-d9ea-4e44-8026-8367e13878ed", "door.A_2"])
def test_safe_names_are_kept(name):
    assert path_component(name, "x") == name


def test_unsafe_names_get_a_hash_and_never_collide():
    names = ["a/b", "a_b", "a b", "a:b", "вход", "..", ".", "", "../etc"]
    out = [path_component(n, "camera") for n in names]
    assert len(set(out)) == len(out)
    for component in out:
        assert component not in ("", ".", "..") and "/" not in component
        assert component.isascii() and not component.startswith(".")
    assert out[0].startswith("a_b-") and out[4].startswith("____-")
    assert path_component("", "camera").startswith("camera-")
