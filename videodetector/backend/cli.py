"""``fkvideo_backend serve [...]``, ``fkvideo_backend token [--short]``,
``fkvideo_backend extraction-api [...]`` (8.5, ``extract_api.py``) and
``fkvideo_backend mass-enroll ...`` (``videodetector.tools.mass_enroll``) and
``fkvideo_backend regenerate ...`` (10.3, ``regenerate.py``) and
``fkvideo_backend db current|upgrade|history`` (the schema's Alembic revision, ``migrations``).

Settings take facenapi's names (10.3.3) both as flags (``--person-identify``) and as
config file keys (``person_identify = True``); flags win over the file.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from videodetector.backend.settings import Settings, SettingsError, read_config_file

FLAG_HELP = {
    "host": "address to listen on (default 127.0.0.1)",
    "port": "TCP port (default 8000)",
    "data_dir": "where the database and images are kept (default ./data/backend)",
    "db": "postgresql://USER@HOST:PORT/DB: keep the database in PostgreSQL (with pgvector), "
          "shared by any number of backend processes; default: SQLite in --data-dir",
    "pg_ef_search": "PostgreSQL /identify: hnsw.ef_search of the HNSW search, 1..1000 "
                    "(candidates visited: higher = better recall, slower; default 100; pgvector's "
                    "own is 40)",
    "upload_path": "URL path of stored images (default uploads)",
    "upload_url": "public base URL for image links (facenapi's ffupload_url); default: "
                  "http://<the server's own address>:<port> (never the client's Host header)",
    "thumbnails_on_read": "a detector's post (photo + one face0) stores no thumbnail; the "
                          "first GET of its URL makes and stores it (default true)",
    "person_identify": "dynamic person creation (8.2)",
    "person_identify_global": "identify persons across all cameras, not per camera",
    "person_identify_threshold": "confidence to join an existing person (default 0.75)",
    "friend_count": "days a person must be seen by one camera to be a friend (default 5)",
    "friend_interval": "seconds looked back for friend days (default 604800)",
    "gae": "enable gender, age and emotion recognition",
    "max_identify_limit": "hard limit on /identify n, 0 = unlimited",
    "fetch_urls": "allow photos given as http(s) URLs to be fetched (off by default)",
    "fetch_timeout": "seconds to fetch a photo URL",
    "fetch_allow": "comma-separated networks (CIDR) --fetch-urls may reach although they are "
                   "loopback, private, link-local or reserved (default: none)",
    "max_normalized_size": "largest accepted normalized face (face0...) width/height in "
                           "pixels (default 1024)",
    "max_request_pixels": "decoded pixels of all images in one request (default 72000000)",
    "camera_file_roots": "comma-separated directories under which a camera url may name a "
                         "local file or device (default: none; only network URLs)",
    "metrics_token": "secret for 'Authorization: Bearer <token>' on /metrics (Prometheus): "
                     "shows all tenants; an API token sees only its own counts",
    "max_photo_bytes": "largest accepted image file (default 10 MB)",
    "max_size": "largest accepted image width/height in pixels (default 6000)",
    "min_face_size": "ignore detected faces smaller than this (pixels)",
    "detector_threshold": "face detector score threshold (default 0.6)",
    "model_threads": "onnxruntime threads per model",
    "embed_max_batch": "most faces of concurrent requests embedded in one SFace run "
                       "(OpenVINO runtimes; 1 = no batching; default 2); each infer request "
                       "keeps ~4.7 MB of buffers per face of it",
    "embedding_model": "embedding model for enrollment and search: auto (default: the model "
                       "recorded for the store, else the one covering its faces, else "
                       "sface-2021dec-bf16 on a CPU with native bf16, sface-2021dec otherwise), "
                       "sface-2021dec, sface-2021dec-int8 or sface-2021dec-bf16; every face "
                       "needs its embedding (fkvideo_backend regenerate) unless --allow-partial",
    "allow_partial": "serve although some faces lack an embedding of --embedding-model "
                     "(they are left out of searches; GET /v1/models shows the coverage)",
    "page_limit": "default page size of paginated lists",
    "idempotency_ttl": "seconds an Idempotency-Key is remembered",
    "history_max_age": "delete camera events older than this many seconds (and their images); "
                       "0 = keep forever (default); at least friend_interval",
    "history_cleanup_interval": "seconds between history retention rounds (default 3600)",
    "preload_models": "load the models at startup (default true)",
    "plugins_dirs": "comma-separated absolute directories holding backend plugins (9.2)",
    "plugins_enabled": "comma-separated plugin (module) names to load, or '*' for all "
                       "(default: none)",
    "plugin_hook_timeout": "seconds a plugin's face_stored call may take (default 5)",
    "log_level": "debug, info, warning or error",
}


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    for f in fields(Settings):
        flag = "--" + f.name.replace("_", "-")
        default = Settings.__dataclass_fields__[f.name].default
        if isinstance(default, bool):
            parser.add_argument(flag, dest=f.name, nargs="?", const="true", default=None,
                                metavar="BOOL", help=FLAG_HELP.get(f.name))
        else:
            parser.add_argument(flag, dest=f.name, default=None, help=FLAG_HELP.get(f.name))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fkvideo_backend",
                                     description="FindFace Server compatible face backend")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the API server")
    serve.add_argument("-c", "--config", help="findface-facenapi.ini style settings file")
    _add_setting_flags(serve)
    token = sub.add_parser("token", help="create an API token (printed as the last word)")
    token.add_argument("--short", action="store_true", help="short token, e.g. A0B1-C2D3")
    token.add_argument("--data-dir", dest="data_dir", default=None)
    token.add_argument("--db", dest="db", default=None, help=FLAG_HELP["db"])
    token.add_argument("-c", "--config", help="settings file (for data_dir)")
    extraction = sub.add_parser("extraction-api", help="run the Extraction API (8.5) alone: "
                                "POST / on port 18666, no token, no database")
    extraction.add_argument("-c", "--config", help="settings file (gae, fetch_urls, ...)")
    _add_setting_flags(extraction)
    sub.add_parser("regenerate", add_help=False, help="regenerate facens, thumbnails and "
                   "normalized faces of the stored faces: another embedding model or other "
                   "detector settings (10.3; see: fkvideo_backend regenerate --help)")
    sub.add_parser("migrate-db", add_help=False, help="copy a SQLite site to PostgreSQL and "
                   "compare both (see: fkvideo_backend migrate-db --help)")
    db = sub.add_parser("db", help="the database schema (Alembic revisions): 'current' shows "
                        "the database's revision, 'upgrade' brings it to this program's "
                        "(as every start does), 'history' lists the revisions")
    db.add_argument("action", choices=["current", "upgrade", "history"])
    db.add_argument("--data-dir", dest="data_dir", default=None)
    db.add_argument("--db", dest="db", default=None, help=FLAG_HELP["db"])
    db.add_argument("-c", "--config", help="settings file (for data_dir / db)")
    sub.add_parser("mass-enroll", add_help=False, help="bulk face enrollment from image files "
                   "(findface-mass-enroll; see: fkvideo_backend mass-enroll --help)")
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        values.update(read_config_file(args.config))
    for f in fields(Settings):
        value = getattr(args, f.name, None)
        if value is not None:
            values[f.name] = value
    return Settings.from_mapping(values)


def _settings_for(**values: Any) -> Settings:
    """Settings of one store for a tool (the defaults plus the given data_dir / db)."""
    return Settings.from_mapping({k: v for k, v in values.items() if v is not None})


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["mass-enroll"]:  # a client of the API: its own options
        from videodetector.tools.mass_enroll import main as mass_enroll

        return mass_enroll(argv[1:], prog="fkvideo_backend mass-enroll")
    if argv[:1] == ["regenerate"]:  # works on the data directory: its own options
        from videodetector.backend.regenerate import main as regenerate

        return regenerate(argv[1:], settings_from_args)
    if argv[:1] == ["migrate-db"]:  # SQLite data directory -> PostgreSQL: its own options
        from videodetector.backend.migrate_db import main as migrate_db

        return migrate_db(argv[1:], _settings_for)
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
    except (SettingsError, OSError) as exc:
        print(f"fkvideo_backend: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # faiss says at INFO which CPU build it loaded, with a "Could not load library with AVX2
    # support due to: ModuleNotFoundError" line at every start that nobody can act on
    if settings.log_level.upper() != "DEBUG":
        logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    if args.command == "token":
        return _token(settings, args.short)
    if args.command == "db":
        return _db(settings, args.action)
    if args.command == "extraction-api":
        from videodetector.backend.extract_api import DEFAULT_PORT, serve_extraction

        if args.port is None:
            settings = settings.with_changes(port=DEFAULT_PORT)
        serve_extraction(settings)
        return 0
    from videodetector.backend.server import serve
    from videodetector.backend.service import ModelCoverageError

    try:
        serve(settings)
    except ModelCoverageError as exc:  # the embedding model does not cover the gallery yet
        print(f"fkvideo_backend: {exc}", file=sys.stderr)
        return 2
    return 0


def _db(settings: Settings, action: str) -> int:
    from videodetector.backend import migrations

    if action == "history":
        print("\n".join(migrations.history()))
        return 0
    if action == "upgrade":
        from videodetector.backend.storage import open_database

        Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
        open_database(settings).close()
    print(migrations.describe(settings))
    return 0


def _token(settings: Settings, short: bool) -> int:
    from videodetector.backend.auth import create_token
    from videodetector.backend.storage import open_database

    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    db = open_database(settings)
    try:
        token = create_token(db, short)
    finally:
        db.close()
    where = settings.data_dir if settings.db is None else "the PostgreSQL database"
    print(f"new {'short' if short else 'long'} token for {where}: {token}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
