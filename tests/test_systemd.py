"""The shipped systemd units parse cleanly (systemd-analyze verify), pointing at this checkout."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_units_verify_without_warnings(tmp_path: Path):
    venv_bin = ROOT / ".venv" / "bin"
    if not (venv_bin / "fkvideo_detector").exists():
        pytest.skip("needs the project's .venv (scripts/setup.sh)")
    for unit in ("fkvideo_detector@.service", "fkvideo_backend.service"):
        text = (ROOT / "systemd" / unit).read_text().replace("/opt/videodetector", str(ROOT))
        name = unit.replace("@.", "@site1.")  # verify a concrete instance of the template
        (tmp_path / name).write_text(text)
    out = subprocess.run(["systemd-analyze", "verify", "--man=no",
                          str(tmp_path / "fkvideo_detector@site1.service"),
                          str(tmp_path / "fkvideo_backend.service")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == "", out.stderr


def test_detector_unit_runs_the_config_of_its_instance():
    text = (ROOT / "systemd" / "fkvideo_detector@.service").read_text()
    assert "-c /etc/fkvideo/%i.ini --check-config" in text  # ExecStartPre validates
    assert "ExecStart=/opt/videodetector/.venv/bin/fkvideo_detector -c /etc/fkvideo/%i.ini" in text
    assert "Restart=on-failure" in text and "User=fkvideo" in text
