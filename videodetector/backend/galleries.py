"""Gallery methods (9.1.2, 9.1.3): list, create, delete. ``default`` always exists."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from videodetector.backend import watchlists
from videodetector.backend.deps import BackendDep, UserDep
from videodetector.backend.params import GalleryName

router = APIRouter(tags=["galleries"])


@router.get("/galleries")
def list_galleries(user: UserDep, backend: BackendDep) -> dict[str, Any]:
    """``{"results": ["default", ...]}``."""
    return {"results": backend.gallery_names(user)}


@router.post("/galleries/{gallery}", status_code=201)
def create_gallery(gallery: GalleryName, user: UserDep, backend: BackendDep) -> JSONResponse:
    """Create a gallery named ``[a-zA-Z0-9_-]{1,48}``; 201 ``{"name": ...}``."""
    backend.create_gallery(user, gallery)
    return JSONResponse({"name": gallery}, status_code=201)


@router.delete("/galleries/{gallery}", status_code=204)
def delete_gallery(gallery: GalleryName, user: UserDep, backend: BackendDep) -> Response:
    """Delete a gallery and all faces in it."""
    backend.delete_gallery(user, gallery)
    watchlists.forget_gallery(backend, user, gallery)
    return Response(status_code=204)
