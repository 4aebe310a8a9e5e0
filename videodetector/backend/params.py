"""Request parameters (9.1 "Parameters Format"): JSON body, urlencoded or multipart form,
or query string, read into one ``Params`` object with typed getters that raise BAD_PARAM.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

from fastapi import Path
from starlette.datastructures import UploadFile
from starlette.requests import Request

from videodetector.backend.errors import ApiError, bad_param, malformed_json, too_large
from videodetector.backend.settings import parse_bool

THRESHOLDS = {"strict": 0.7834, "medium": 0.6616, "low": 0.5690, "none": 0.0}
DEFAULT_THRESHOLD = 0.75
MF_SELECTORS = ("reject", "biggest", "all")

Box = tuple[float, float, float, float]

# Ids and integers are SQLite INTEGERs: a value outside 64 bits is a bad parameter,
# not a server error. ``DbId`` is the type of the ids in URL paths.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
DbId = Annotated[int, Path(ge=INT64_MIN, le=INT64_MAX)]
# A gallery name in a URL path (service.GALLERY_RE), documented in the OpenAPI schema.
GalleryName = Annotated[str, Path(pattern=r"^[a-zA-Z0-9_-]{1,48}$")]

# Edge limits (every request field is bounded before it reaches the service):
MAX_JSON_DEPTH = 16  # nesting of any JSON value: a whole JSON body, detectorParams, ...
MAX_JSON_FIELD = 65536  # characters of a JSON field: detectorParams with a 500-point track fit
MAX_TEXT = 4096  # characters of any text field (meta, url, cam_id, ...) unless said otherwise
MAX_LIST_ITEMS = 256  # items of a list field (galleries, bbox, cam_ids)
MAX_FILES = 66  # files in a form: photo (or photo1 + photo2) and face0..face63
MAX_FIELDS = 1000  # fields in a form
MAX_COORD = 65536.0  # |x|, |y| of a box corner in pixels (frames are at most 16384 wide)


def exact_int(value: Any) -> int | None:
    """``value`` as an int if it is one, or a string of decimal digits; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = value.strip() if isinstance(value, str) else ""
    digits = text[1:] if text[:1] in "+-" else text
    # more than 40 digits is no 64-bit id: not parsed (int() refuses over 4300 anyway)
    ok = digits.isdigit() and digits.isascii() and len(digits) <= 40
    return int(text) if ok else None


class Params:
    """Parameter name -> value (str, JSON value, UploadFile, or a list for repeated fields)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def __contains__(self, name: str) -> bool:
        return name in self.values and self.values[name] is not None

    def raw(self, name: str, default: Any = None) -> Any:
        value = self.values.get(name, default)
        return default if value is None else value

    def names(self) -> list[str]:
        return list(self.values)

    def single(self, name: str) -> Any:
        value = self.raw(name)
        if isinstance(value, list) and value and isinstance(value[0], UploadFile):
            return value[0]
        return value

    def text(self, name: str, default: str | None = None, max_len: int = MAX_TEXT
             ) -> str | None:
        """A text field of at most ``max_len`` characters (numbers and booleans as text)."""
        value = self.raw(name)
        if value is None:
            return default
        return check_text(name, value, max_len)

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        try:
            return parse_bool(value)
        except ValueError:
            raise bad_param(name, f"{name} must be true or false", value) from None

    def number(self, name: str, default: float | None = None) -> float | None:
        value = self.raw(name)
        if value is None or value == "":
            return default
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise bad_param(name, f"{name} must be a number", value) from None
        if not math.isfinite(number):
            raise bad_param(name, f"{name} must be a finite number", value)
        return number

    def integer(self, name: str, default: int | None = None, lo: int = INT64_MIN,
                hi: int = INT64_MAX) -> int | None:
        """An integer (``"12"``, ``12``, also ``"12.0"``) within ``lo..hi`` (64 bits by
        default); large ids keep every digit (they are not read through a float)."""
        value = self.raw(name)
        if value is None or value == "":
            return default
        number = exact_int(value)
        if number is None:
            as_float = self.number(name)  # BAD_PARAM if not a number at all
            if as_float is None or not as_float.is_integer():
                raise bad_param(name, f"{name} must be an integer", value)
            number = int(as_float)
        if not lo <= number <= hi:
            raise bad_param(name, f"{name} must be in {lo}..{hi}", value)
        return number

    def json(self, name: str, max_chars: int = MAX_JSON_FIELD) -> Any:
        """A structured value: given as JSON in a JSON body, or as a JSON string in a form;
        at most ``MAX_JSON_DEPTH`` deep and ``max_chars`` long as JSON text."""
        value = self.raw(name)
        if isinstance(value, UploadFile):
            raise bad_param(name, f"{name} must be a text field, not a file")
        if isinstance(value, str):
            if len(value) > max_chars:
                raise bad_param(name, f"{name} is {len(value)} characters, more than "
                                f"{max_chars}", value)
            return self.json_text(name, value)
        if isinstance(value, list | dict) and len(json.dumps(value)) > max_chars:
            raise bad_param(name, f"{name} is more than {max_chars} characters as JSON", value)
        return value

    def str_list(self, name: str) -> list[str]:
        """A list of names: a JSON list, a JSON string of a list, comma-separated text, or
        repeated form fields."""
        value = self.raw(name)
        if value is None:
            return []
        items = value if isinstance(value, list) else [value]
        out: list[str] = []
        for item in items:
            if isinstance(item, str):
                text = item.strip()
                if text.startswith("["):
                    out.extend(str_items(name, self.json_text(name, text)))
                else:
                    out.extend(p.strip() for p in text.split(",") if p.strip())
            else:
                out.extend(str_items(name, item))
        return out

    @staticmethod
    def json_text(name: str, text: str) -> Any:
        try:
            return load_json(text)
        except ValueError as exc:
            raise bad_param(name, f"{name} must be JSON: {exc}", text) from None

    def threshold(self, name: str = "threshold") -> float | None:
        """A confidence threshold; None for "none" (similarity mode)."""
        value = self.raw(name)
        if value is None or value == "":
            return DEFAULT_THRESHOLD
        if isinstance(value, str) and value.strip().lower() in THRESHOLDS:
            key = value.strip().lower()
            return None if key == "none" else THRESHOLDS[key]
        number = self.number(name)
        if number is None or not 0.0 <= number <= 1.0:
            raise bad_param(name, f"{name} must be strict, medium, low, none or a number "
                            "in [0, 1]", value)
        return number

    def mf_selector(self, name: str = "mf_selector") -> str:
        value = (self.text(name) or "biggest").strip().lower()
        if value not in MF_SELECTORS:
            raise bad_param(name, f"{name} must be one of {', '.join(MF_SELECTORS)}", value)
        return value

    def boxes(self, name: str = "bbox") -> list[Box] | None:
        """A list of boxes: ``[[x1,y1,x2,y2], ...]``, ``[{"x1":..}, ...]``, or a single box."""
        value = self.json(name)
        if value is None or value == "" or value == []:
            return None
        if isinstance(value, dict) or (isinstance(value, list) and value
                                       and isinstance(value[0], int | float)):
            value = [value]
        if not isinstance(value, list):
            raise bad_param(name, f"{name} must be a list of [x1, y1, x2, y2] boxes", value)
        if len(value) > MAX_LIST_ITEMS:
            raise bad_param(name, f"{name} has {len(value)} boxes, more than "
                            f"{MAX_LIST_ITEMS}", len(value))
        return [parse_box(name, item) for item in value]

    def xyxy(self) -> Box | None:
        """A box given as separate x1, y1, x2, y2 parameters (/identify)."""
        present = [k for k in ("x1", "y1", "x2", "y2") if k in self]
        if not present:
            return None
        if len(present) != 4:
            missing = sorted({"x1", "y1", "x2", "y2"} - set(present))
            raise bad_param(missing[0], "x1, y1, x2 and y2 must be given together")
        return parse_box("x1", [self.number(k) for k in ("x1", "y1", "x2", "y2")])


def str_items(name: str, value: Any) -> list[str]:
    if isinstance(value, str):
        return [check_text(name, value)]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        if len(value) > MAX_LIST_ITEMS:
            raise bad_param(name, f"{name} has {len(value)} items, more than "
                            f"{MAX_LIST_ITEMS}", len(value))
        return [check_text(name, v) for v in value]
    raise bad_param(name, f"{name} must be a list of strings", value)


def check_text(name: str, value: Any, max_len: int = MAX_TEXT) -> str:
    """``value`` as text (numbers and booleans as JSON text) of at most ``max_len``
    characters, without NUL characters; BAD_PARAM naming ``name`` otherwise."""
    if isinstance(value, UploadFile):
        raise bad_param(name, f"{name} must be a text field, not a file")
    if isinstance(value, bool | int | float):
        text = json.dumps(value) if isinstance(value, bool) else str(value)
    elif isinstance(value, str):
        text = value
    else:
        raise bad_param(name, f"{name} must be a string", value)
    if len(text) > max_len:
        raise bad_param(name, f"{name} is {len(text)} characters, more than {max_len}", text)
    if "\x00" in text:
        raise bad_param(name, f"{name} must not contain NUL characters", text)
    return text


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is out of the float range")
    return value


def json_depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0, ``[]`` is 1), without recursion."""
    depth = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        elif not isinstance(item, list):
            continue
        depth = max(depth, level + 1)
        stack.extend((child, level + 1) for child in item if isinstance(child, list | dict))
    return depth


def load_json(text: str | bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` that refuses (ValueError) what the rest of the backend cannot handle:
    NaN/Infinity, floats out of range, integers of more than 4300 digits, nesting deeper than
    ``max_depth`` (before Python's own recursion limit is hit)."""
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except RecursionError:
        raise ValueError(f"nested more than {max_depth} levels deep") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8: {exc}") from None
    if json_depth(value) > max_depth:
        raise ValueError(f"nested more than {max_depth} levels deep")
    return value


def parse_box(name: str, item: Any) -> Box:
    if isinstance(item, dict):
        try:
            item = [item["x1"], item["y1"], item["x2"], item["y2"]]
        except KeyError as exc:
            raise bad_param(name, f"{name}: a box needs x1, y1, x2 and y2 (missing {exc})",
                            item) from None
    if not (isinstance(item, list | tuple) and len(item) == 4
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in item)):
        raise bad_param(name, f"{name}: a box is [x1, y1, x2, y2] (4 numbers)", item)
    try:
        x1, y1, x2, y2 = (float(v) for v in item)
    except OverflowError:  # an integer beyond the float range
        raise bad_param(name, f"{name}: box coordinates must be within +-{MAX_COORD:g}",
                        list(item)) from None
    if not all(math.isfinite(v) and abs(v) <= MAX_COORD for v in (x1, y1, x2, y2)):
        raise bad_param(name, f"{name}: box coordinates must be finite numbers within "
                        f"+-{MAX_COORD:g}", list(item))
    if x2 <= x1 or y2 <= y1:
        raise bad_param(name, f"{name}: a box needs x2 > x1 and y2 > y1", list(item))
    return x1, y1, x2, y2


async def read_params(request: Request, max_body: int) -> Params:
    """Query string, then the body (JSON object, urlencoded or multipart form) on top."""
    values: dict[str, Any] = {}
    for key in request.query_params:
        items = request.query_params.getlist(key)
        values[key] = items if len(items) > 1 else items[0]
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        values.update(await _read_form(request, max_body))
    else:
        body = await request.body()
        if len(body) > max_body:  # room for base64 images (decoded and checked per field)
            raise too_large("body", len(body), max_body)
        if body.strip():
            values.update(_parse_json_body(body, ctype))
    return Params(values)


def _parse_json_body(body: bytes, ctype: str) -> dict[str, Any]:
    try:
        data = load_json(body)
    except ValueError as exc:
        if ctype not in ("", "application/json", "text/plain") and not ctype.endswith("+json"):
            raise bad_param("Content-Type", f"unsupported Content-Type {ctype!r}; use "
                            "application/json, multipart/form-data or "
                            "application/x-www-form-urlencoded", ctype) from None
        raise malformed_json(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise malformed_json("the request body must be a JSON object")
    return data


async def _read_form(request: Request, max_body: int) -> dict[str, Any]:
    try:
        form = await request.form(max_files=MAX_FILES, max_fields=MAX_FIELDS,
                                  max_part_size=max_body)
    except ApiError:
        raise
    except Exception as exc:  # noqa: BLE001 - multipart parser errors have no common base
        if getattr(exc, "status_code", None) == 413:
            raise too_large("body", max_body + 1, max_body) from None
        raise bad_param("body", f"could not parse the form: {exc}") from None
    values: dict[str, Any] = {}
    for key in form:
        items = form.getlist(key)
        values[key] = items if len(items) > 1 else items[0]
    return values


async def read_upload(value: UploadFile, name: str, max_bytes: int) -> bytes:
    """The bytes of an uploaded file, refusing (413) anything over ``max_bytes``."""
    if value.size is not None and value.size > max_bytes:
        raise too_large(name, value.size, max_bytes)
    data = await value.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise too_large(name, len(data), max_bytes)
    return data
