"""The main job (README's first command) keeps working: real backend + real detector processes.

Run once, with ``--serve``: the report, then the console's address, and the backend stays up
(a newcomer sees the demo's persons in the browser) until SIGTERM."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import pytest
import requests


def test_demo_finds_three_persons_and_one_friend_and_serves_the_console(tmp_path):
    proc = subprocess.Popen([sys.executable, "-u", "-m", "videodetector.demo", "--workdir",
                             str(tmp_path), "--serve"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "stays up until you press Ctrl-C" in line:
                break
        out = "".join(lines)
        assert proc.poll() is None, out
        assert "Persons found: 3" in out
        statuses = re.findall(r"-> (FRIEND|not a friend)", out)
        assert sorted(statuses) == ["FRIEND", "not a friend", "not a friend"]
        events = re.findall(r"friend=(yes|no) +snapshot (http://\S+_photo\.jpeg)", out)
        assert [e[0] for e in events].count("yes") == 1 and len(events) == 4

        url = re.search(r"Operator console: (http://\S+/)", out)
        token = re.search(r"log in with the demo's API token (\S+)", out)
        assert url and token, out
        time.sleep(1)  # still up after the demo finished
        page = requests.get(url[1], timeout=10)
        assert page.status_code == 200 and "videodetector console" in page.text
        session = requests.Session()
        r = session.post(url[1] + "v1/session", json={"token": token[1]}, timeout=10)
        assert r.status_code == 200, r.text
        assert len(session.get(url[1] + "v1/persons", timeout=10).json()["results"]) == 3
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    rest = proc.stdout.read()
    assert code == 0, out + rest
    assert "stopping the backend" in rest
    with pytest.raises(requests.ConnectionError):
        requests.get(url[1], timeout=5)
