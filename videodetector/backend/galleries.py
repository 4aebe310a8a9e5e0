"""Gallery methods (9.1.2, 9.1.3): list, create, delete. ``default`` always exists."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from videodetector.backend import watchlists
from videodetector.backend.deps import current_user, get_backend
from videodetector.backend.params import GalleryName

router = APIRouter(tags=["galleries"])


@router.get("/galleries")
async def list_galleries(request: Request, user: int = Depends(current_user)) -> dict[str, Any]:
    """``{"results": ["default", ...]}``."""
    return {"results": await run_in_threadpool(get_backend(request).gallery_names, user)}


@router.post("/galleries/{gallery}", status_code=201)
async def create_gallery(gallery: GalleryName, request: Request,
                         user: int = Depends(current_user)) -> JSONResponse:
    """Create a gallery named ``[a-zA-Z0-9_-]{1,48}``; 201 ``{"name": ...}``."""
    await run_in_threadpool(get_backend(request).create_gallery, user, gallery)
    return JSONResponse({"name": gallery}, status_code=201)


@router.delete("/galleries/{gallery}", status_code=204)
async def delete_gallery(gallery: GalleryName, request: Request,
                         user: int = Depends(current_user)) -> Response:
    """Delete a gallery and all faces in it."""
    backend = get_backend(request)
    await run_in_threadpool(backend.delete_gallery, user, gallery)
    await run_in_threadpool(watchlists.forget_gallery, backend, user, gallery)
    return Response(status_code=204)
