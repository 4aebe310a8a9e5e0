"""``GET /v1/models``: the embedding model serving searches, and how far each model's
embeddings cover the caller's faces (``fkvideo_backend regenerate`` fills them).

Answer::

    {"active": "sface-2021dec", "configured": "auto",
     "chosen_because": "auto: recorded for this store", "partial": false,
     "thresholds": {"low": 0.569, "medium": 0.6616, "strict": 0.7834,
                    "cosines": {"low": 0.2026, "medium": 0.3913, "strict": 0.5013}},
     "models": [{"model": "sface-2021dec", "faces": 12, "covered": 12, "missing": 0,
                 "complete": true, "fraction": 1.0, "active": true}, ...],
     "galleries": {"default": {"faces": 12, "covered": {"sface-2021dec": 12,
                                                         "sface-2021dec-int8": 5}}, ...}}

``partial`` is true when the active model does not cover every face (the backend was started
with ``--allow-partial``): faces without its embedding are not searched. ``configured`` is the
``embedding_model`` setting, ``chosen_because`` why ``active`` serves (model_choice.py).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from videodetector.backend.deps import BackendDep, UserDep
from videodetector.backend.service import DEFAULT_GALLERY, Backend
from videodetector.backend.settings import EMBEDDING_MODELS
from videodetector.core.confidence import ANCHORS, CONF_LOW, CONF_MEDIUM, CONF_STRICT

router = APIRouter(tags=["models"])


def models_info(backend: Backend, user: int) -> dict[str, Any]:
    backend.refresh_regenerated()
    rows = []
    for model in EMBEDDING_MODELS:
        entry = backend.faces_store.coverage(model, user).as_json()
        entry["active"] = model == backend.model
        rows.append(entry)
    active = next(r for r in rows if r["active"])
    galleries = {}
    for name in backend.gallery_names(user):
        g = None if name == DEFAULT_GALLERY else name
        per_model = {m: backend.faces_store.coverage(m, user, g) for m in EMBEDDING_MODELS}
        galleries[name] = {"faces": per_model[backend.model].faces,
                           "covered": {m: c.covered for m, c in per_model.items()}}
    cos = ANCHORS[backend.model]
    return {
        "active": backend.model, "configured": backend.configured_model,
        "chosen_because": backend.model_choice.reason, "partial": not active["complete"],
        "thresholds": {"low": CONF_LOW, "medium": CONF_MEDIUM, "strict": CONF_STRICT,
                       "cosines": dict(zip(("low", "medium", "strict"), cos, strict=True))},
        "models": rows, "galleries": galleries,
    }


@router.get("/models", summary="Embedding models and their coverage of the caller's faces")
def get_models(user: UserDep, backend: BackendDep) -> dict[str, Any]:
    return models_info(backend, user)
