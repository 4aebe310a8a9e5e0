"""Backend settings: facenapi option names (10.3.3), validated once, frozen.

Values come from (lowest priority first) the defaults below, a config file in
``findface-facenapi.ini`` style (``key = python_literal`` lines, e.g.
``friend_interval = (3600*24*7)``) and command-line flags (``--friend-interval``).
Every error names the option it is about.
"""

from __future__ import annotations

import ast
import ipaddress
import logging
import math
import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# The embedding models models.py can run (kept here so settings stay import-light).
EMBEDDING_MODELS = ("sface-2021dec", "sface-2021dec-int8", "sface-2021dec-bf16")
# embedding_model "auto": the store's recorded model, else one chosen for it (model_choice.py)
AUTO_MODEL = "auto"


class SettingsError(ValueError):
    """A setting has a bad value; the message names the setting."""


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("data/backend")
    # the shared store of any number of backend processes: postgresql://USER@HOST:PORT/DB
    # (with pgvector); None = the embedded SQLite file <data_dir>/backend.sqlite3.
    # Images stay under data_dir/uploads either way (shared by every process: mount it)
    db: str | None = None
    db_pool_size: int = 10  # PostgreSQL connections per backend process
    db_connect_timeout: float = 3.0  # seconds; the API answers 503 when it runs out
    db_statement_timeout: float = 15.0  # seconds one statement may take (PostgreSQL)
    # PostgreSQL /identify: hnsw.ef_search of the first HNSW search (candidates visited;
    # more = better recall, slower; pgvector's own default is 40); a filtered search widens
    # it itself (pgsearch.py: EF_SEARCH_DEFAULT is this default)
    pg_ef_search: int = 100
    # Images are served at <upload_url or request base URL>/<upload_path>/...
    upload_path: str = "uploads"
    upload_url: str | None = None
    # a detector's post (photo + one face0) stores no thumbnail: the first GET of its URL
    # makes and stores it (thumbs.py); False: made at post time, as every other post does
    thumbnails_on_read: bool = True
    # 8.2 dynamic person creation
    person_identify: bool = False
    person_identify_global: bool = False
    person_identify_threshold: float = 0.75
    # person matching with the detector's tracks and face quality (backend/person_match.py)
    person_min_quality: float = -6.5  # poorer faces join persons but never create one
    person_track_ttl: float = 300.0  # seconds a track's person is remembered
    person_merge: bool = True  # merge two persons a good face shows to be one
    person_merge_min_quality: float = -5.0  # quality of a face that may merge persons
    # 8.3 friend or foe
    friend_count: int = 5
    friend_interval: float = 3600 * 24 * 7
    # 8.1 gender, age and emotions (emotions answered by /detect and the Extraction API)
    gae: bool = False
    max_identify_limit: int = 0  # hard cap on /identify "n"; 0 = unlimited
    fetch_urls: bool = False  # fetch "photo" given as an http(s) URL
    fetch_timeout: float = 10.0
    # networks (CIDR) that --fetch-urls may reach although loopback/private/link-local/...
    fetch_allow: tuple[str, ...] = ()
    max_photo_bytes: int = 10 * 1024 * 1024
    max_size: int = 6000  # largest accepted photo width/height in pixels
    max_normalized_size: int = 1024  # largest accepted face0.. (normalized face) side
    # decoded pixels of all images of one request (photo, photo1+photo2, face0..face63)
    max_request_pixels: int = 2 * 6000 * 6000
    # directories under which a camera url may name a local file or device; none by default
    camera_file_roots: tuple[Path, ...] = ()
    # /metrics: "Authorization: Bearer <metrics_token>" shows every tenant's counts;
    # an API token shows request counters and its own counts only
    metrics_token: str | None = None
    min_face_size: int = 0  # detections with a smaller shorter side are ignored
    detector_threshold: float = 0.6
    # the embedding model that serves enrollment and search (regenerate.py fills the others);
    # "auto": the one recorded for the store, else chosen for it (model_choice.py). The
    # Backend's settings hold the resolved name
    embedding_model: str = AUTO_MODEL
    # serve although some faces have no embedding of embedding_model (they are not searched)
    allow_partial: bool = False
    model_threads: int = 1
    # faces of concurrent requests embedded in one SFace run at most (OpenVINO; 1 = one face
    # per run, no batching); each infer request keeps buffers for this many faces (~4.7 MB
    # each). The default is engine.EMBED_MAX_BATCH (the figures are there)
    embed_max_batch: int = 2
    page_limit: int = 100  # default page size of paginated lists
    idempotency_ttl: float = 3600 * 24 * 7  # seconds an Idempotency-Key is remembered
    # camera events older than this (seconds) are deleted; 0 = keep forever (retention.py)
    history_max_age: float = 0.0
    history_cleanup_interval: float = 3600.0  # seconds between retention rounds
    # /v1/faces/sync: deletions are remembered this long (seconds); an older cursor must
    # resynchronize from scratch (410 RESYNC_REQUIRED)
    sync_tombstone_ttl: float = 30 * 86400.0
    # faces of one user from which searches ask an HNSW graph for candidates (re-scored
    # exactly); below it a flat scan is exact and fast. 0 = always the flat scan (index.py)
    index_ann_min_faces: int = 20000
    # faces stored after the last graph snapshot that start-up adds to it; more -> the graph
    # is rebuilt in the background while searches scan exactly
    index_ann_catchup: int = 50000
    preload_models: bool = True  # load the models at startup rather than on first use
    # 9.2 plugins (plugin_host.py): modules <name>.py / <name>/ in these absolute directories,
    # loaded when named in plugins_enabled ("*" = all of them); none by default
    plugins_dirs: tuple[Path, ...] = ()
    plugins_enabled: tuple[str, ...] = ()
    plugin_hook_timeout: float = 5.0  # seconds a face_stored call may take
    log_level: str = "info"

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        object.__setattr__(self, "upload_path", self.upload_path.strip("/"))
        if self.upload_url is not None:
            object.__setattr__(self, "upload_url", self.upload_url.rstrip("/") or None)
        object.__setattr__(self, "fetch_allow", _as_tuple(self.fetch_allow, str))
        object.__setattr__(self, "camera_file_roots", _as_tuple(self.camera_file_roots, Path))
        object.__setattr__(self, "plugins_dirs", _as_tuple(self.plugins_dirs, Path))
        object.__setattr__(self, "plugins_enabled", _as_tuple(self.plugins_enabled, str))
        _check(self)

    def with_changes(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Settings:
        """Build from loosely typed values (config file, flags); unknown keys are an error."""
        known = {f.name: f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, raw in values.items():
            name = ALIASES.get(key, key).replace("-", "_")
            if name not in known:
                raise SettingsError(f"unknown setting {key!r}")
            if raw is None:
                continue
            kwargs[name] = _convert(name, raw, cls.__dataclass_fields__[name].default)
        return cls(**kwargs)


# facenapi's name for the upload base URL.
ALIASES = {"ffupload_url": "upload_url"}


def _as_tuple(value: Any, kind: type) -> tuple[Any, ...]:
    """A list setting from a list or comma-separated text."""
    if isinstance(value, str | Path):
        value = [v for v in str(value).split(",") if v.strip()]
    return tuple(kind(str(v).strip()) for v in value)


def _convert(name: str, raw: Any, default: Any) -> Any:
    try:
        if name in ("upload_url", "metrics_token"):
            return str(raw) if raw else None
        if isinstance(default, tuple):
            return raw
        if isinstance(default, bool):
            return parse_bool(raw)
        if isinstance(default, int):
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError(f"expected an integer, got {raw}")
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, Path):
            return Path(raw)
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"{name}: {exc}") from None


def parse_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int | float):
        return bool(raw)
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected a boolean (true/false), got {raw!r}")


def _check(s: Settings) -> None:
    def need(ok: bool, name: str, what: str) -> None:
        if not ok:
            raise SettingsError(f"{name} must be {what}, got {getattr(s, name)!r}")

    for f in fields(s):
        value = getattr(s, f.name)
        if isinstance(value, float):
            need(math.isfinite(value), f.name, "a finite number")

    need(0 <= s.port <= 65535, "port", "in 0..65535")
    need(s.db is None or s.db.startswith(("postgresql://", "postgres://")), "db",
         "a postgresql://USER@HOST:PORT/DB URL (or unset for SQLite)")
    need(1 <= s.db_pool_size <= 1000, "db_pool_size", "in 1..1000")
    need(0 < s.db_connect_timeout <= 300, "db_connect_timeout", "in (0, 300] seconds")
    need(0 < s.db_statement_timeout <= 3600, "db_statement_timeout", "in (0, 3600] seconds")
    need(1 <= s.pg_ef_search <= 1000, "pg_ef_search", "in 1..1000 (pgvector's hnsw.ef_search)")
    need(0.0 <= s.person_identify_threshold <= 1.0, "person_identify_threshold", "in [0, 1]")
    need(-20.0 <= s.person_min_quality <= 0.0, "person_min_quality", "in [-20, 0]")
    need(0 < s.person_track_ttl <= 86400, "person_track_ttl", "in (0, 86400] seconds")
    need(-20.0 <= s.person_merge_min_quality <= 0.0, "person_merge_min_quality",
         "in [-20, 0]")
    need(s.friend_count >= 1, "friend_count", ">= 1")
    need(s.friend_interval > 0, "friend_interval", "> 0 seconds")
    need(s.max_identify_limit >= 0, "max_identify_limit", ">= 0")
    need(0 < s.fetch_timeout <= 3600, "fetch_timeout", "in (0, 3600] seconds")
    need(s.max_photo_bytes > 0, "max_photo_bytes", "> 0")
    need(s.max_size > 0, "max_size", "> 0")
    need(s.max_normalized_size > 0, "max_normalized_size", "> 0")
    need(s.max_request_pixels >= s.max_size ** 2, "max_request_pixels",
         f">= max_size squared ({s.max_size ** 2})")
    need(s.metrics_token is None or (len(s.metrics_token) >= 16 and s.metrics_token.isascii()
                                     and s.metrics_token.isprintable()
                                     and " " not in s.metrics_token),
         "metrics_token", "at least 16 printable ASCII characters without spaces")
    need(all(p.is_absolute() for p in s.camera_file_roots), "camera_file_roots",
         "absolute directories")
    for net in s.fetch_allow:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise SettingsError(f"fetch_allow must be IP networks (CIDR), got {net!r}") from None
    need(s.min_face_size >= 0, "min_face_size", ">= 0")
    _check_plugins(s)
    need(s.index_ann_min_faces >= 0, "index_ann_min_faces", ">= 0 (0 = exact search only)")
    need(s.index_ann_catchup >= 0, "index_ann_catchup", ">= 0")
    need(0.0 < s.detector_threshold < 1.0, "detector_threshold", "in (0, 1)")
    need(s.model_threads >= 1, "model_threads", ">= 1")
    need(1 <= s.embed_max_batch <= 64, "embed_max_batch", "in 1..64 (1 = no batching)")
    need(s.embedding_model in (AUTO_MODEL, *EMBEDDING_MODELS), "embedding_model",
         f"{AUTO_MODEL} or one of {', '.join(EMBEDDING_MODELS)}")
    need(1 <= s.page_limit <= 10000, "page_limit", "in 1..10000")
    need(s.idempotency_ttl > 0, "idempotency_ttl", "> 0")
    # friend-or-foe counts days within friend_interval: history must reach that far back
    need(s.history_max_age == 0 or s.history_max_age >= s.friend_interval, "history_max_age",
         f"0 (keep forever) or >= friend_interval ({s.friend_interval:g} s)")
    need(s.sync_tombstone_ttl > 0, "sync_tombstone_ttl", "> 0 seconds")
    need(0 < s.history_cleanup_interval <= 7 * 86400, "history_cleanup_interval",
         "in (0, 604800] seconds")
    need(bool(s.upload_path) and ".." not in s.upload_path.split("/"), "upload_path",
         "a non-empty URL path")
    need(s.upload_url is None or s.upload_url.startswith(("http://", "https://")),
         "upload_url", "an http(s) URL")


_PLUGIN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def _check_plugins(s: Settings) -> None:
    for d in s.plugins_dirs:
        if not d.is_absolute():
            raise SettingsError(f"plugins_dirs must be absolute directories, got {str(d)!r}")
    for name in s.plugins_enabled:
        if name != "*" and not _PLUGIN_NAME.match(name):
            raise SettingsError(f"plugins_enabled must be module names (Python identifiers) "
                                f"or *, got {name!r}")
    if s.plugins_enabled and not s.plugins_dirs:
        raise SettingsError(f"plugins_enabled {','.join(s.plugins_enabled)!r} needs "
                            "plugins_dirs (where the plugins are)")
    if not 0 < s.plugin_hook_timeout <= 600:
        raise SettingsError(f"plugin_hook_timeout must be in (0, 600] seconds, got "
                            f"{s.plugin_hook_timeout!r}")


# ---------------------------------------------------------------------------
# Config file: "key = value" lines whose values are Python literals or arithmetic.
# ---------------------------------------------------------------------------

_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Pow: operator.pow}


def _eval_node(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _eval_node(node.operand)
        return -value if isinstance(node.op, ast.USub) else +value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        return _BINOPS[type(node.op)](_eval_node(node.left), _eval_node(node.right))
    if isinstance(node, ast.List | ast.Tuple):
        return [_eval_node(e) for e in node.elts]
    raise ValueError(f"unsupported expression {ast.unparse(node)!r}")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Settings from a findface-facenapi.ini-style file. Unknown keys are logged and skipped."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        tree = ast.parse(text, filename=str(path))
    except SyntaxError as exc:
        raise SettingsError(f"config file {path}: line {exc.lineno}: {exc.msg}") from None
    known = {f.name for f in fields(Settings)} | set(ALIASES)
    values: dict[str, Any] = {}
    for stmt in tree.body:
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name)):
            raise SettingsError(f"config file {path}: line {stmt.lineno}: expected key = value")
        key = stmt.targets[0].id
        try:
            value = _eval_node(stmt.value)
        except (ValueError, TypeError, ZeroDivisionError) as exc:
            raise SettingsError(f"config file {path}: {key}: {exc}") from None
        if key not in known:
            log.warning("config file %s: ignoring unsupported setting %r", path, key)
            continue
        values[key] = value
    return values
