"""Live event stream: ``GET /v1/events/stream`` (Server-Sent Events).

Streams the token's new camera events (faces posted with a ``cam_id``) as JSON, one SSE
message per event with ``id:`` = the event id. Every stream reads the database, after the
last id it sent, every ``POLL_SECONDS``: writers commit one at a time (``BEGIN IMMEDIATE``)
and ids only grow, so reading ``id > last`` misses nothing and repeats nothing, also when
another process wrote the event. A client that reconnects sends ``Last-Event-ID`` (browsers'
EventSource do this on their own) and resumes after it; ``?after=<id>`` does the same on a
first connection; with neither, the stream starts with the next new event.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from videodetector.backend import openapi, views
from videodetector.backend.deps import BackendDep, UserDep, urls_of
from videodetector.backend.errors import ApiError, bad_param
from videodetector.backend.params import INT64_MAX, exact_int
from videodetector.backend.service import Backend

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15.0
BATCH = 200
RETRY_MS = 2000
MAX_STREAMS_PER_USER = 16  # open streams of one token in one process (tabs, integrations)

router = APIRouter(tags=["events"])

def closing(app: FastAPI) -> threading.Event:
    """Set when the server begins to shut down: open streams end at their next poll instead
    of holding the shutdown for uvicorn's whole graceful timeout (clients reconnect)."""
    event = getattr(app.state, "events_closing", None)
    if event is None:
        event = app.state.events_closing = threading.Event()
    return event


def shutting_down(app: object) -> None:
    """Tell ``app``'s streams that the server is stopping (a no-op for other apps)."""
    if isinstance(app, FastAPI):
        closing(app).set()


def open_streams(app: FastAPI) -> dict[int, int]:
    """user -> open streams in this process."""
    counts = getattr(app.state, "open_streams", None)
    if counts is None:
        counts = app.state.open_streams = {}
    return counts


def resume_id(name: str, value: str | None) -> int | None:
    """A resume point (``Last-Event-ID`` or ``after``): an event id >= 0, or None if absent."""
    if value is None or value.strip() == "":
        return None
    number = exact_int(value)
    if number is None or not 0 <= number <= INT64_MAX:
        raise bad_param(name, f"{name} must be an event id (an integer >= 0)", value)
    return number


def latest_id(backend: Backend, user: int) -> int:
    """The newest event id of ``user`` now (0 when there is none)."""
    return backend.faces_store.latest_camera_event(user)


def new_events(backend: Backend, user: int, after: int, limit: int = BATCH
               ) -> list[sqlite3.Row]:
    return backend.faces_store.camera_events(user, after, limit)


def stream_json(row: sqlite3.Row, urls: views.Urls) -> dict[str, Any]:
    """The history event (as /v1/history/search has it) plus the camera's and person's meta
    and, when stored, gender and age."""
    out = views.event_json(row, urls)
    out["camera_meta"] = row["camera_meta"]
    out["person_meta"] = row["person_meta"]
    if row["gender"] is not None:
        out["gender"] = row["gender"]
        out["gender_confidence"] = row["gender_confidence"]
    if row["age"] is not None:
        out["age"] = row["age"]
    return out


def sse_message(event_id: int, data: dict[str, Any]) -> str:
    return f"id: {event_id}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def _stream(request: Request, backend: Backend, user: int, last: int
                  ) -> AsyncIterator[str]:
    urls = urls_of(request)
    stop = closing(request.app)
    counts = open_streams(request.app)
    counts[user] = counts.get(user, 0) + 1
    try:
        yield f"retry: {RETRY_MS}\n: stream of camera events after id {last}\n\n"
        quiet = 0.0
        while not stop.is_set() and not await request.is_disconnected():
            rows = await run_in_threadpool(new_events, backend, user, last)
            for row in rows:
                last = int(row["id"])
                yield sse_message(last, stream_json(row, urls))
            if len(rows) == BATCH:
                continue
            if rows:
                quiet = 0.0
            await asyncio.sleep(POLL_SECONDS)
            quiet += POLL_SECONDS
            if quiet >= KEEPALIVE_SECONDS:
                quiet = 0.0
                yield ": keepalive\n\n"
    finally:
        counts[user] -= 1
        if counts[user] <= 0:
            del counts[user]


@router.get("/events/stream", response_class=StreamingResponse, responses={
    429: openapi.ERRORS[413] | {"description": "TOO_MANY_STREAMS: this token has 16 open"},
    200: {"content": {"text/event-stream": {}},
    "description": "Server-Sent Events; each message: id = event id, data = the event JSON"}})
def event_stream(request: Request, user: UserDep, backend: BackendDep,
                 after: str | None = Query(None, pattern=r"^[0-9]{1,18}$")
                 ) -> StreamingResponse:
    """The token's new camera events as Server-Sent Events (``text/event-stream``).

    Each message has ``id:`` = the event id and ``data:`` = the event as JSON (the fields of
    /v1/history/search plus ``camera_meta``, ``person_meta``, ``gender``, ``age``). Resume
    without gaps by sending the last id you got as the ``Last-Event-ID`` header (EventSource
    does this when it reconnects) or as ``?after=<id>``; with neither, the stream starts at the
    next new event. A comment line is sent every 15 s while nothing happens. At most 16 open
    streams per token (429 TOO_MANY_STREAMS)."""
    closing(request.app)
    busy = open_streams(request.app).get(user, 0)
    if busy >= MAX_STREAMS_PER_USER:
        raise ApiError(429, "TOO_MANY_STREAMS", f"this token already has {busy} open event "
                       f"streams (at most {MAX_STREAMS_PER_USER}); close one first")
    last = resume_id("Last-Event-ID", request.headers.get("last-event-id"))
    if last is None:
        last = resume_id("after", after)
    if last is None:
        last = latest_id(backend, user)
    return StreamingResponse(_stream(request, backend, user, last),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
