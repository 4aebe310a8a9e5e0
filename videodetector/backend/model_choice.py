"""Which embedding model a backend serves: ``embedding_model = "auto"`` (the default) or a name.

Resolved once when the backend opens its store, before anything uses the model:

* a model name: that model;
* ``auto``: the model recorded for this store (``settings`` row ``embedding_model``), if any;
  else, when the store has faces, the model that covers all of them (an existing site keeps
  ``sface-2021dec``; several: the first in ``PREFERENCE``); else (an empty store)
  ``sface-2021dec-bf16`` when the CPU runs bfloat16 natively (OpenVINO's CPU
  ``OPTIMIZATION_CAPABILITIES`` has ``BF16``: AMX or AVX512-BF16), ``sface-2021dec`` otherwise.

The choice is recorded in the store: ``auto`` records it at once, first writer wins, so
backend processes sharing one PostgreSQL agree; an explicit model is recorded once its
coverage check passed (``Backend._load_index``), so a site that regenerated its faces for
another model and served it once keeps that model under ``auto``.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from videodetector.backend.embeddings import Coverage, coverage
from videodetector.backend.settings import AUTO_MODEL, EMBEDDING_MODELS
from videodetector.backend.stores import Db
from videodetector.backend.stores.store_model import SqlStoreModelStore
from videodetector.core.models import SFACE_BF16_NAME, SFACE_INT8_NAME, SFACE_NAME

log = logging.getLogger(__name__)

F32, BF16 = SFACE_NAME, SFACE_BF16_NAME
# several models cover every face: the old default first
PREFERENCE = (F32, BF16, SFACE_INT8_NAME)


@dataclass(frozen=True)
class ModelChoice:
    model: str
    reason: str  # said in the start log line and by GET /v1/models
    record: bool  # store it now (auto; first writer wins)


def choose_embedding_model(configured: str, recorded: str | None,
                           coverage: Mapping[str, Coverage], cpu_has_bf16: bool) -> ModelChoice:
    """The rule above. ``coverage``: each model's coverage of all stored faces (only looked
    at under ``auto`` with nothing recorded)."""
    if configured != AUTO_MODEL:
        if configured not in EMBEDDING_MODELS:
            raise ValueError(f"embedding_model must be auto or one of "
                             f"{', '.join(EMBEDDING_MODELS)}, got {configured!r}")
        return ModelChoice(configured, "configured", record=False)
    if recorded is not None:
        if recorded not in EMBEDDING_MODELS:
            raise ValueError(f"the store records embedding model {recorded!r}, which this "
                             f"program does not know ({', '.join(EMBEDDING_MODELS)}): set "
                             "embedding_model explicitly")
        return ModelChoice(recorded, "auto: recorded for this store", record=False)
    faces = max((c.faces for c in coverage.values()), default=0)
    if faces == 0:
        if cpu_has_bf16:
            return ModelChoice(BF16, "auto: new store and this CPU runs bf16", record=True)
        return ModelChoice(F32, "auto: new store and this CPU has no native bf16", record=True)
    complete = [m for m in PREFERENCE if m in coverage and coverage[m].complete]
    if complete:
        return ModelChoice(complete[0], f"auto: it covers the store's {faces} faces",
                           record=True)
    best = max(PREFERENCE, key=lambda m: coverage[m].covered if m in coverage else -1)
    return ModelChoice(best, f"auto: no model covers all {faces} faces; {best} covers most",
                       record=False)


@functools.lru_cache(maxsize=1)
def cpu_runs_bf16() -> bool:
    """True when OpenVINO's CPU plugin runs bfloat16 natively here (False without
    openvino or when it cannot tell)."""
    try:
        import openvino as ov

        caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception as exc:  # noqa: BLE001 - no openvino, no CPU plugin: f32 then
        log.info("cannot ask OpenVINO whether the CPU runs bf16 (%s): assuming not", exc)
        return False
    return "BF16" in [str(c) for c in caps]


def resolve_embedding_model(db: Db, configured: str,
                            cpu_has_bf16: Callable[[], bool] = cpu_runs_bf16) -> ModelChoice:
    """``configured`` resolved for the store ``db`` (the rule above).
    Reads only (``record_choice`` writes): regenerate resolves its default with this."""
    if configured != AUTO_MODEL:
        return choose_embedding_model(configured, None, {}, False)
    store = SqlStoreModelStore(db)
    recorded = store.recorded()
    cov: dict[str, Coverage] = {}
    if recorded is None:
        cov = {m: coverage(db, m) for m in EMBEDDING_MODELS}
    empty = recorded is None and all(c.faces == 0 for c in cov.values())
    return choose_embedding_model(configured, recorded, cov, empty and cpu_has_bf16())


def record_choice(db: Db, choice: ModelChoice) -> ModelChoice:
    """Record an ``auto`` choice (first writer wins): the choice, or the model another
    process recorded first. A store that cannot be written (full disk) keeps the choice
    unrecorded; the next start makes it again."""
    try:
        first = SqlStoreModelStore(db).record_first(choice.model)
    except sqlite3.OperationalError as exc:
        log.warning("could not record the embedding model %s for this store: %s",
                    choice.model, exc)
        return choice
    if first != choice.model:
        return choose_embedding_model(AUTO_MODEL, first, {}, False)
    return choice


def record_configured(db: Db, model: str) -> None:
    """Record an explicitly configured model that covers every face (the next ``auto``
    start keeps it)."""
    store = SqlStoreModelStore(db)
    try:
        if store.recorded() != model:
            store.record(model)
            log.info("embedding model %s recorded for this store", model)
    except sqlite3.OperationalError as exc:
        log.warning("could not record the embedding model %s for this store: %s", model, exc)
