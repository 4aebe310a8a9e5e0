"""API errors (9.1 "Error Reporting"): a JSON body ``{code, reason, ...}`` and an HTTP status."""

from __future__ import annotations

import json
import math
from typing import Any


class ApiError(Exception):
    """An error answered to the client as ``{"code": ..., "reason": ..., **extra}``."""

    def __init__(self, status: int, code: str, reason: str, **extra: Any) -> None:
        super().__init__(reason)
        self.status = status
        self.code = code
        self.reason = reason
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "reason": self.reason, **self.extra}


def bad_param(param: str, reason: str, value: Any = None, status: int = 400,
              **extra: Any) -> ApiError:
    """BAD_PARAM naming the parameter (``param``) and the offending ``value`` (made safe to
    echo: JSON-serializable, finite, short)."""
    return ApiError(status, "BAD_PARAM", reason, param=param, value=echo_value(value), **extra)


ECHO_CHARS = 200  # an echoed value longer than this is cut


def echo_value(value: Any) -> Any:
    """``value`` as it may be echoed in an error body: scalars as they are (a non-finite float
    or a huge int as text), anything else as short JSON-ish text."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else _short(str(value))
    if isinstance(value, str):
        return _short(value)
    if isinstance(value, list | dict):
        try:  # a small, finite JSON value is echoed as it is
            text = json.dumps(value, allow_nan=False)
        except (ValueError, TypeError, RecursionError):
            text = None
        if text is not None and len(text) <= ECHO_CHARS:
            return value
        if text is not None:
            return _short(text)
    return _short(_text_of(value))


def _text_of(value: Any) -> str:
    try:
        return str(value)[:ECHO_CHARS * 2]
    except (ValueError, RecursionError):
        return type(value).__name__


def _short(text: str) -> str:
    return text if len(text) <= ECHO_CHARS else text[:ECHO_CHARS] + "..."


def not_found(what: str, ident: Any) -> ApiError:
    return ApiError(404, "NOT_FOUND", f"{what} {ident} not found", param="id", value=ident)


def auth_failed(reason: str) -> ApiError:
    return ApiError(401, "AUTH_FAILED", reason)


def malformed_json(reason: str) -> ApiError:
    return ApiError(400, "MALFORMED_JSON", reason)


def too_large(param: str, size: int, limit: int) -> ApiError:
    return bad_param(
        param, f"{param} is {size} bytes, larger than the {limit} byte limit "
        f"({limit / 1048576:g} MB)", status=413,
    )


def unavailable(reason: str) -> ApiError:
    return ApiError(503, "SERVICE_UNAVAILABLE", reason)
