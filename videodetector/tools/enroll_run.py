"""``run``: post every pending image of a job file to ``POST /v1/face``, ``--parallel`` at a time.

What the backend answers decides an image's fate:

* 200: ``done``, with the ids of the faces stored;
* 4xx about the image (no face, too many faces with ``--mf-selector reject``, not an image,
  too large): ``failed`` with the backend's reason (``--failed`` tries them again);
* 4xx about the run itself (bad token, unknown URL, ``--gender``/``--age`` a backend
  without --gae refuses): the run stops, the images stay pending;
* no answer (connection refused or cut, timeout), 429, 502-504: the backend is down or busy;
  the image is retried with exponential backoff (up to ``--max-backoff`` seconds between
  tries) until it answers, and is never marked failed for that. A 500 is retried
  ``SERVER_ERROR_TRIES`` times, then the image fails with it.

Each image is posted with an ``Idempotency-Key`` derived from the job and the image, so an
image whose answer was lost (timeout, the client killed after the backend stored the face) is
stored once: the backend answers the retry with the faces of the first request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests

from videodetector.core.backoff import Backoff
from videodetector.tools.enroll_job import DONE, FAILED, PENDING, Image, JobFile

log = logging.getLogger(__name__)

MF_SELECTORS = ("all", "biggest", "reject")
RUN_PARAMS = frozenset({"emotions", "gender", "age", "galleries"})  # a 4xx on these: stop
RETRY_STATUSES = frozenset({429, 502, 503, 504})
SERVER_ERROR_TRIES = 3
MAX_PARALLEL = 256
MAX_FILE_BYTES = 64 * 2**20  # never read more (the backend's own limit is 10 MB by default)

Say = Callable[[str], None]


@dataclass(frozen=True)
class RunOptions:
    token: str
    api: str = "http://127.0.0.1:8000/"
    gallery: str = "default"
    parallel: int = 10
    include_failed: bool = False
    mf_selector: str | None = None  # None: the backend's default (biggest)
    gender: bool = False
    age: bool = False
    emotions: bool = False
    stats_interval: float = 1.0
    timeout: float = 60.0
    max_backoff: float = 30.0

    def __post_init__(self) -> None:
        if not self.token.strip():
            raise ValueError("--token is required (an API token of the backend)")
        url = urlsplit(self.api)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise ValueError(f"--api must be an http(s) URL, not {self.api!r}")
        if not 1 <= self.parallel <= MAX_PARALLEL:
            raise ValueError(f"--parallel must be 1..{MAX_PARALLEL}, not {self.parallel}")
        if self.mf_selector is not None and self.mf_selector not in MF_SELECTORS:
            raise ValueError(f"--mf-selector must be one of {', '.join(MF_SELECTORS)}, "
                             f"not {self.mf_selector!r}")
        if not self.gallery:
            raise ValueError("--gallery must not be empty")
        for name in ("stats_interval", "timeout", "max_backoff"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name.replace('_', '-')} must be > 0, "
                                 f"not {getattr(self, name)!r}")

    @property
    def base_url(self) -> str:
        """``--api`` with ``/v1`` appended unless it already names an API version."""
        base = self.api.rstrip("/")
        return base if base.endswith(("/v0", "/v1")) else base + "/v1"

    def form(self, meta: str) -> dict[str, str]:
        data = {"meta": meta, "galleries": self.gallery}
        if self.mf_selector:
            data["mf_selector"] = self.mf_selector
        for name in ("gender", "age", "emotions"):
            if getattr(self, name):
                data[name] = "true"
        return data


# -- outcomes ---------------------------------------------------------------------

@dataclass(frozen=True)
class Done:
    face_ids: list[int]


@dataclass(frozen=True)
class Failed:
    reason: str


@dataclass(frozen=True)
class Fatal:
    """Not the image's fault: the whole run must stop (the image stays pending)."""
    reason: str


@dataclass(frozen=True)
class Retry:
    reason: str
    server_error: bool = False


@dataclass(frozen=True)
class Stopped:
    """The run was interrupted before the backend answered; the image stays pending."""


Outcome = Done | Failed | Fatal | Retry | Stopped


def error_text(status: int, body: Any, text: str) -> str:
    """``CODE: reason (param)`` from a 9.1 error body, else the status and the text."""
    if isinstance(body, dict) and body.get("reason"):
        out = f"{body.get('code', status)}: {body['reason']}"
        return out + (f" ({body['param']})" if body.get("param") else "")
    return f"HTTP {status}: {text.strip()[:200]}"


def classify(status: int, body: Any, text: str) -> Outcome:
    """What an answer to ``POST /face`` means for the image and the run."""
    if status == 200:
        try:
            return Done([int(face["id"]) for face in body["results"]])
        except (TypeError, KeyError, ValueError):
            return Failed(f"unexpected answer: {text.strip()[:200]}")
    reason = error_text(status, body, text)
    if status in RETRY_STATUSES:
        return Retry(reason)
    if status >= 500:
        return Retry(reason, server_error=True)
    if status in (401, 403):
        return Fatal(f"the backend refused the token: {reason}")
    if status in (404, 405):
        return Fatal(f"HTTP {status} at this URL (is --api right?): {reason}")
    if isinstance(body, dict) and body.get("param") in RUN_PARAMS:
        return Fatal(f"the backend refused the request: {reason}")
    return Failed(reason)


def json_or_none(resp: requests.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


# -- HTTP ------------------------------------------------------------------------

class Client:
    """``requests`` sessions (one per thread) against the backend, with retries."""

    def __init__(self, opts: RunOptions, stop: threading.Event, say: Say) -> None:
        self.opts = opts
        self.stop = stop
        self.say = say
        self._local = threading.local()
        self._notice_lock = threading.Lock()
        self._last_notice = 0.0

    def session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
            s.headers["Authorization"] = f"Token {self.opts.token}"
        return s

    def notice(self, text: str, every: float = 10.0) -> None:
        """At most one line every ``every`` seconds for all threads (backend down)."""
        with self._notice_lock:
            now = time.monotonic()
            if now - self._last_notice < every:
                return
            self._last_notice = now
        self.say(text)

    def request(self, method: str, path: str, **kw: Any) -> requests.Response:
        kw.setdefault("timeout", (10.0, self.opts.timeout))
        return self.session().request(method, self.opts.base_url + path, **kw)

    def with_retries(self, attempt: Callable[[], Outcome], what: str) -> Outcome:
        """Call ``attempt`` until it answers something else than Retry (a 500 only
        ``SERVER_ERROR_TRIES`` times), waiting with backoff in between; Stopped if the
        run is stopped meanwhile."""
        backoff = Backoff(min(0.5, self.opts.max_backoff), self.opts.max_backoff)
        server_errors = 0
        while not self.stop.is_set():
            outcome = attempt()
            if not isinstance(outcome, Retry):
                return outcome
            if outcome.server_error:
                server_errors += 1
                if server_errors >= SERVER_ERROR_TRIES:
                    return Failed(outcome.reason)
            delay = backoff.next()
            self.notice(f"{what}: {outcome.reason}; retrying (next try in {delay:g} s)")
            if self.stop.wait(delay):
                break
        return Stopped()

    def post_face(self, job: JobFile, image: Image) -> Outcome:
        try:
            with open(image.path, "rb") as f:
                photo = f.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            return Failed(f"cannot read the image: {exc.strerror or exc}")
        if len(photo) > MAX_FILE_BYTES:
            return Failed(f"the file is larger than {MAX_FILE_BYTES // 2**20} MB")
        headers = {"Idempotency-Key": job.idempotency_key(image)}
        files = {"photo": (image.path.rsplit("/", 1)[-1], photo, "application/octet-stream")}

        def attempt() -> Outcome:
            try:
                resp = self.request("POST", "/face", headers=headers, files=files,
                                    data=self.opts.form(image.meta))
            except requests.RequestException as exc:
                return Retry(f"backend unreachable ({type(exc).__name__})")
            return classify(resp.status_code, json_or_none(resp), resp.text)

        return self.with_retries(attempt, "POST /face")

    def ensure_gallery(self) -> Outcome:
        """Check the URL and the token, and that ``--gallery`` exists (created if missing):
        Done, Fatal with the reason, or Stopped."""
        name = self.opts.gallery

        def attempt() -> Outcome:
            try:
                resp = self.request("GET", "/galleries")
                if resp.status_code == 200:
                    names = gallery_names(json_or_none(resp))
                    if names is None:
                        return Fatal(f"GET {self.opts.base_url}/galleries: not a FindFace "
                                     f"API answer (is --api right?): {resp.text[:100]!r}")
                    if name in names:
                        return Done([])
                    resp = self.request("POST", f"/galleries/{name}")
                    if resp.status_code == 201:
                        self.say(f"Created gallery {name!r}")
                        return Done([])
            except requests.RequestException as exc:
                return Retry(f"backend unreachable ({type(exc).__name__})")
            outcome = classify(resp.status_code, json_or_none(resp), resp.text)
            if isinstance(outcome, Retry | Fatal):
                return outcome
            reason = error_text(resp.status_code, json_or_none(resp), resp.text)
            return Fatal(f"gallery {name!r}: {reason}")

        outcome = self.with_retries(attempt, "GET /galleries")
        return Fatal(outcome.reason) if isinstance(outcome, Failed) else outcome


def gallery_names(body: Any) -> list[str] | None:
    """The names in a ``GET /galleries`` answer, None when it is not one."""
    results = body.get("results") if isinstance(body, dict) else None
    if not isinstance(results, list):
        return None
    return [str(g.get("name")) if isinstance(g, dict) else str(g) for g in results]


# -- progress ----------------------------------------------------------------------

def hms(seconds: float | None) -> str:
    if seconds is None:
        return "--:--:--"
    s = int(seconds)
    return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


@dataclass
class Stats:
    total: int
    skipped: int
    succeeded: int = 0
    failed: int = 0
    faces: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def processed(self) -> int:
        return self.succeeded + self.failed + self.skipped

    def line(self, now: float | None = None) -> str:
        """``[n/N] faces processed (x succeeded, y failed, z skipped). r rps. [elapsed/eta]``"""
        elapsed = max((now or time.monotonic()) - self.started, 1e-9)
        rate = (self.succeeded + self.failed) / elapsed
        left = self.total - self.processed
        eta = left / rate if rate > 0 else (0.0 if left == 0 else None)
        return (f"[{self.processed}/{self.total}] faces processed ({self.succeeded} succeeded, "
                f"{self.failed} failed, {self.skipped} skipped). {rate:.2f} rps. "
                f"[{hms(elapsed)}/{hms(eta)}]")

    def summary(self, stopped: str | None) -> str:
        lines = ["", "----- Summary -----", "",
                 f"Found {self.total} images in job file",
                 f"Skipped {self.skipped} already processed images",
                 f"Successfully processed {self.succeeded} images ({self.faces} faces enrolled)",
                 f"Failed to process {self.failed} images"]
        left = self.total - self.processed
        if left:
            lines.append(f"Not processed yet {left} images (run again to continue)")
        if stopped:
            lines.append(f"Stopped: {stopped}")
        return "\n".join(lines)


# -- the run ----------------------------------------------------------------------

@dataclass(frozen=True)
class RunResult:
    stats: Stats
    stopped: str | None  # why the run stopped before the end, None when it finished

    @property
    def exit_code(self) -> int:
        if self.stopped == "interrupted":
            return 130
        if self.stopped:
            return 2
        return 1 if self.stats.failed else 0


class Runner:
    def __init__(self, job: JobFile, opts: RunOptions, say: Say = print) -> None:
        self.job = job
        self.opts = opts
        self.say = say
        self.stop = threading.Event()
        self.client = Client(opts, self.stop, say)
        self.states = (PENDING, FAILED) if opts.include_failed else (PENDING,)
        self.fatal: str | None = None

    def record(self, stats: Stats, image: Image, outcome: Outcome) -> None:
        if isinstance(outcome, Done):
            self.job.mark_done(image, outcome.face_ids)
            stats.succeeded += 1
            stats.faces += len(outcome.face_ids)
        elif isinstance(outcome, Failed):
            self.job.mark_failed(image, outcome.reason)
            stats.failed += 1
        elif isinstance(outcome, Fatal) and self.fatal is None:
            self.fatal = outcome.reason
            self.stop.set()

    def _post(self, image: Image) -> Outcome:
        try:
            return self.client.post_face(self.job, image)
        except Exception as exc:  # noqa: BLE001 - one bad image never stops the others
            log.exception("image %s: unexpected error", image.path)
            return Failed(f"unexpected error: {type(exc).__name__}: {exc}")

    def run(self) -> RunResult:
        total = self.job.count()
        todo = sum(self.job.count(s) for s in self.states)
        stats = Stats(total=total, skipped=total - todo)
        try:
            check = self.client.ensure_gallery() if todo else Done([])
            if isinstance(check, Fatal):
                return self._end(stats, check.reason)
            if isinstance(check, Stopped):
                return self._end(stats, "interrupted")
            self._pump(stats, self.job.images(self.states))
        except KeyboardInterrupt:
            self.stop.set()
            return self._end(stats, "interrupted")
        return self._end(stats, self.fatal)

    def _end(self, stats: Stats, stopped: str | None) -> RunResult:
        self.say(stats.line())
        self.say(stats.summary(stopped))
        return RunResult(stats, stopped)

    def _pump(self, stats: Stats, images: Iterator[Image]) -> None:
        """Keep ``parallel`` posts in flight; record answers as they come; print the
        progress line every ``stats_interval`` seconds."""
        window = self.opts.parallel * 2
        next_stats = time.monotonic() + self.opts.stats_interval
        inflight: dict[Future[Outcome], Image] = {}
        pool = ThreadPoolExecutor(self.opts.parallel, thread_name_prefix="mass-enroll")
        try:
            exhausted = False
            while True:
                while not exhausted and not self.stop.is_set() and len(inflight) < window:
                    image = next(images, None)
                    if image is None:
                        exhausted = True
                    else:
                        inflight[pool.submit(self._post, image)] = image
                if not inflight:
                    return
                finished, _ = wait(inflight, timeout=max(0.0, next_stats - time.monotonic()),
                                   return_when=FIRST_COMPLETED)
                for fut in finished:
                    self.record(stats, inflight.pop(fut), fut.result())
                if time.monotonic() >= next_stats:
                    self.say(stats.line())
                    next_stats = time.monotonic() + self.opts.stats_interval
        finally:
            if inflight:  # interrupted or failed: the posts in flight stop retrying
                self.stop.set()
            self._drain(stats, inflight, pool)

    def _drain(self, stats: Stats, inflight: dict[Future[Outcome], Image],
               pool: ThreadPoolExecutor) -> None:
        """Record what the posts still in flight answer (interrupted: they stop retrying)."""
        for fut in list(inflight):
            fut.cancel()
        for fut, image in inflight.items():
            if not fut.cancelled():
                self.record(stats, image, fut.result())
        pool.shutdown(wait=True)


def run_job(job_path: str, opts: RunOptions, say: Say = print) -> RunResult:
    with JobFile(job_path) as job:
        return Runner(job, opts, say).run()


__all__ = ["DONE", "FAILED", "PENDING", "RunOptions", "RunResult", "Runner", "classify",
           "run_job"]
