"""The README's option reference lists every fkvideo_detector option (docs stay in step)."""

from __future__ import annotations

from pathlib import Path

from videodetector.detector.config import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_option_is_in_the_readme_table():
    text = README.read_text()
    missing = [opt for action in build_parser()._actions for opt in action.option_strings
               if opt.startswith("--") and opt != "--help" and f"`{opt}`" not in text]
    assert missing == []


def test_every_option_is_in_the_example_config():
    ini = (README.parent / "configs" / "fkvideo.ini").read_text()
    skip = {"--help", "--config", "--check-config", "--requeue-rejected", "--head", "--api-host",
            "--api-port"}
    missing = [opt for action in build_parser()._actions for opt in action.option_strings
               if opt.startswith("--") and opt not in skip and f"{opt[2:]}=" not in ini]
    assert missing == []
