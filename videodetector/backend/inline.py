"""Images carried inside a request body: base64 text (optionally a ``data:`` URI) and
``multipart:NAME`` references to other parts of a multipart body (Extraction API, 8.5.2).

Sizes are checked before anything is decoded: the base64 text of an image larger than
``max_bytes`` is refused (413) from its length alone.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request

from videodetector.backend.errors import ApiError, bad_param, malformed_json, too_large
from videodetector.backend.params import read_upload

MULTIPART_PREFIX = "multipart:"
_DATA_URI = re.compile(r"^data:[a-zA-Z0-9.+/-]*(;[a-zA-Z0-9=.+-]+)*;base64,", re.ASCII)
_WHITESPACE = re.compile(r"\s+")


def decoded_size(text: str) -> int:
    """The number of bytes a base64 text without whitespace decodes to (at most)."""
    return len(text) * 3 // 4


def is_url(value: str) -> bool:
    return value.startswith(("http://", "https://"))


def decode_base64_image(value: str, param: str, max_bytes: int,
                        forms: str | None = None) -> bytes:
    """The bytes of a base64 image (``data:image/...;base64,...`` or bare base64);
    ``forms``: what the parameter may be, for the error message."""
    text = value.strip()
    match = _DATA_URI.match(text)
    if match:
        text = text[match.end():]
    elif text.startswith("data:"):
        raise bad_param(param, f"{param}: only base64 data URIs are accepted "
                        "(data:image/jpeg;base64,...)", value)
    text = _WHITESPACE.sub("", text)
    if decoded_size(text) > max_bytes + 2:
        raise too_large(param, decoded_size(text), max_bytes)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        forms = forms or (f"an image as base64 (or a data: URI), an http(s) URL or "
                          f"{MULTIPART_PREFIX}<part name>")
        raise bad_param(param, f"{param} must be {forms}", value) from None
    if not data:
        raise bad_param(param, f"{param} is empty")
    if len(data) > max_bytes:
        raise too_large(param, len(data), max_bytes)
    return data


def part_name(value: str) -> str | None:
    """``NAME`` of a ``multipart:NAME`` reference, else None."""
    if value.startswith(MULTIPART_PREFIX):
        return value[len(MULTIPART_PREFIX):]
    return None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class Parts:
    """The uploaded files of a multipart body by part name, each read at most once and
    limited to ``max_bytes``."""

    def __init__(self, files: list[tuple[str, UploadFile]], max_bytes: int,
                 fields: dict[str, str] | None = None) -> None:
        self.ordered = files
        self.fields = fields or {}  # the text parts (last value of each name)
        self.max_bytes = max_bytes
        self._data: dict[str, bytes] = {}

    def __len__(self) -> int:
        return len(self.ordered)

    async def read(self, name: str, param: str) -> bytes:
        """The bytes of the file part ``name`` (a ``multipart:name`` reference)."""
        if name not in self._data:
            matches = [f for n, f in self.ordered if n == name]
            if len(matches) != 1:
                raise bad_param(param, f"{param} refers to {MULTIPART_PREFIX}{name}, but the "
                                f"request has {len(matches)} file parts named {name!r} "
                                "(exactly one is needed)", name)
            self._data[name] = await read_upload(matches[0], param, self.max_bytes)
        return self._data[name]

    async def read_index(self, index: int, param: str) -> bytes:
        """The bytes of the ``index``-th file part."""
        return await read_upload(self.ordered[index][1], param, self.max_bytes)


async def read_json_and_parts(request: Request, json_part: str, max_files: int,
                              max_body: int, max_file_bytes: int) -> tuple[Any, Parts]:
    """A JSON body, or a multipart body with a JSON text part ``json_part`` (optional), other
    text parts and file parts. Returns (the JSON value or None, the parts)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "multipart/form-data":
        body = await request.body()
        if not body.strip():
            raise bad_param("body", "the request body is empty")
        try:
            return json.loads(body), Parts([], max_file_bytes)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise malformed_json(f"the request body is not valid JSON: {exc}") from None
    try:
        form = await request.form(max_files=max_files, max_fields=max_files + 16,
                                  max_part_size=max_body)
    except ApiError:
        raise
    except Exception as exc:  # noqa: BLE001 - multipart parser errors have no common base
        raise bad_param("body", f"could not parse the form (at most {max_files} files): "
                        f"{exc}") from None
    files: list[tuple[str, UploadFile]] = []
    fields: dict[str, str] = {}
    value: Any = None
    for key, item in form.multi_items():
        if isinstance(item, UploadFile):
            files.append((key, item))
            continue
        fields[key] = item
        if key == json_part:
            try:
                value = json.loads(item)
            except json.JSONDecodeError as exc:
                raise malformed_json(f"the {json_part!r} part is not valid JSON: {exc}"
                                     ) from None
    return value, Parts(files, max_file_bytes, fields)
