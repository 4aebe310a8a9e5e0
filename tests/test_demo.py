"""The main job (README's first command) keeps working: real backend + real detector processes."""

from __future__ import annotations

import re
import subprocess
import sys


def test_demo_finds_three_persons_and_one_friend(tmp_path):
    out = subprocess.run([sys.executable, "-m", "videodetector.demo", "--workdir", str(tmp_path)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Persons found: 3" in out.stdout
    statuses = re.findall(r"-> (FRIEND|not a friend)", out.stdout)
    assert sorted(statuses) == ["FRIEND", "not a friend", "not a friend"]
    events = re.findall(r"friend=(yes|no) +snapshot (http://\S+_photo\.jpeg)", out.stdout)
    assert [e[0] for e in events].count("yes") == 1 and len(events) == 4
