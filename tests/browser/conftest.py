"""Browser fixtures: Debian's Chromium driven by Playwright (from PyPI) against the real
``fkvideo_backend`` started as a process. Skips with the reason when Chromium or Playwright
is missing (``scripts/setup.sh`` installs Chromium when run as root)."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Procs

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def chromium_path() -> Path:
    if not CHROMIUM.is_file():
        found = shutil.which("chromium")
        if not found:
            pytest.skip("Chromium is not installed: run scripts/setup.sh as root "
                        "(apt-get install -y chromium) to run the browser tests")
        return Path(found)
    return CHROMIUM


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="the playwright package is not installed "
                                          "(pip install -e '.[test]')")
    path = chromium_path()
    with sync_api.sync_playwright() as pw:
        try:
            chromium = pw.chromium.launch(executable_path=str(path), args=CHROMIUM_ARGS)
        except sync_api.Error as exc:
            pytest.skip(f"Chromium at {path} does not start under Playwright: {exc}")
        try:
            yield chromium
        finally:
            chromium.close()


class Site:
    """The backend process and what the tests learned about it (every URL the browser asked
    for, every dialog it opened)."""

    def __init__(self, procs: Procs, data_dir: Path, *extra_args: str) -> None:
        self.procs = procs
        self.data_dir = data_dir
        self.args = ["--person-identify", "1", "--friend-count", "2",
                     "--friend-interval", str(7 * 86400), "--log-level", "info", *extra_args]
        self.backend = procs.backend(data_dir, *self.args)
        self.port = self.backend.port  # any free one at the first start, kept at a restart
        self.backends = [self.backend]
        self.url = self.backend.url
        self.urls: list[str] = []
        self.dialogs: list[str] = []
        self.tokens: list[str] = []

    def restart(self) -> None:
        """Stop the backend (SIGTERM) and start it again on the same port and data."""
        code = self.backend.terminate()
        assert code in (0, -signal.SIGTERM), self.backend.tail()
        self.backend = self.procs.backend(self.data_dir, *self.args, port=self.port,
                                          tag=str(len(self.backends)))
        self.backends.append(self.backend)

    def token(self) -> str:
        token = self.procs.token(self.data_dir)
        self.tokens.append(token)
        return token

    def page(self, browser: Any, viewport: dict[str, int] | None = None,
             timezone: str = "Europe/Berlin") -> Any:
        context = browser.new_context(viewport=viewport or DESKTOP, timezone_id=timezone,
                                      locale="en-US")
        context.on("request", lambda req: self.urls.append(req.url))
        page = context.new_page()
        page.on("dialog", self._dialog)
        page.set_default_timeout(15000)
        return page

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        if dialog.type == "confirm":
            dialog.accept()
        else:
            dialog.dismiss()

    def login(self, page: Any, token: str) -> None:
        page.goto(self.url + "/")
        page.fill("#token", token)
        page.click("#login button[type=submit]")
        page.wait_for_selector("#topbar:not([hidden])")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("console")
    procs = Procs(tmp)
    try:
        (tmp / "data").mkdir()
        yield Site(procs, tmp / "data")
    finally:
        procs.cleanup()


@pytest.fixture
def shot(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Any, str], None]:
    """``shot(page, name)``: a screenshot of the page. The README's pictures under
    docs/screenshots/ are rewritten only with ``UPDATE_SCREENSHOTS=1`` (a test run must not
    change tracked files); otherwise they go to a temporary folder, to look at."""
    folder = (SCREENSHOTS if os.environ.get("UPDATE_SCREENSHOTS") == "1"
              else tmp_path_factory.mktemp("screenshots"))

    def take(page: Any, name: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for _ in range(50):  # (wait_for_function would need eval, which the CSP forbids)
            if page.evaluate("Array.from(document.images).every((i) => i.complete)"):
                break
            page.wait_for_timeout(100)
        page.wait_for_timeout(1700)  # the arrival highlight (1.6 s) fades
        page.screenshot(path=str(folder / f"{name}.png"), full_page=False)

    return take
