"""API errors (9.1 "Error Reporting"): a JSON body ``{code, reason, ...}`` and an HTTP status."""

from __future__ import annotations

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
    """BAD_PARAM naming the parameter (``param``) and the offending ``value``."""
    if value is not None and not isinstance(value, str | int | float | bool | list | dict):
        value = str(value)
    if isinstance(value, str) and len(value) > 200:
        value = value[:200] + "..."
    return ApiError(status, "BAD_PARAM", reason, param=param, value=value, **extra)


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
