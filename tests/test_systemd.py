"""The shipped systemd units parse cleanly (systemd-analyze verify), pointing at this checkout."""

from __future__ import annotations

import re
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
    units = ("fkvideo_detector@.service", "fkvideo_backend.service", "fkvideo_backend-pg@.service")
    for unit in units:
        text = (ROOT / "systemd" / unit).read_text().replace("/opt/videodetector", str(ROOT))
        # verify a concrete instance of each template (the backend's instance is its port)
        name = unit.replace("_detector@.", "_detector@site1.").replace("-pg@.", "-pg@8001.")
        (tmp_path / name).write_text(text)
    out = subprocess.run(["systemd-analyze", "verify", "--man=no",
                          str(tmp_path / "fkvideo_detector@site1.service"),
                          str(tmp_path / "fkvideo_backend.service"),
                          str(tmp_path / "fkvideo_backend-pg@8001.service")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == "", out.stderr


def test_detector_unit_runs_the_config_of_its_instance():
    text = (ROOT / "systemd" / "fkvideo_detector@.service").read_text()
    assert "-c /etc/fkvideo/%i.ini --check-config" in text  # ExecStartPre validates
    assert "ExecStart=/opt/videodetector/.venv/bin/fkvideo_detector -c /etc/fkvideo/%i.ini" in text
    assert "Restart=on-failure" in text and "User=fkvideo" in text


def test_balancer_and_backend_units_agree_on_the_ports():
    """nginx's upstream lists the ports the documented backend instances listen on."""
    nginx = (ROOT / "configs" / "nginx-fkvideo.conf").read_text()
    unit = (ROOT / "systemd" / "fkvideo_backend-pg@.service").read_text()
    assert "--port %i -c /etc/fkvideo/backend-pg.ini" in unit
    documented = set(re.findall(r"fkvideo_backend-pg@(\d+)", unit))
    upstream = set(re.findall(r"server 127\.0\.0\.1:(\d+)", nginx))
    assert documented and documented == upstream, (documented, upstream)
