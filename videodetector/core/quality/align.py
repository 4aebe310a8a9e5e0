"""The aligned grey face that sharpness is measured on, made cheaply but bit for bit as
``models.similarity_transform`` + ``models.align_face`` (and the area pre-shrink of
``score.aligned_grey_face``) make it.

Three savings, each taken only when it provably changes no bit, else the general code runs:

* **The similarity in closed form.** ``similarity_transform`` (Umeyama) runs an SVD and
  two determinants on a 2x2 covariance (about 40 us of numpy calls per estimate, two per
  face). For a 2-D similarity the same least-squares answer has a closed form: with the
  points centred, ``a = sum(s . d) / sum(|s|^2)`` and ``b = sum(s x d) / sum(|s|^2)`` give
  ``scale * rot = [[a, -b], [b, a]]`` (Umeyama's reflection fix included: his ``c R`` is
  linear in the covariance, ``[[p + s, q - r], [r - q, p + s]] / var``). The two differ in
  float64 rounding only, far below float32's: the estimate is returned as the float32
  matrix only when every entry, moved either way by an error bound (GUARD times the
  double rounding either path can do, see :func:`error_bounds`), still rounds to the
  same float32 - then the SVD path cannot round to anything else. Otherwise the SVD runs:
  for 4 of ~1200 estimates on YuNet's faces of the shared clips, and for an entry that is
  exactly 0 (a face exactly upright), which the SVD's noise may round to +-1e-17.
* **The shrink factor without ``np.linalg.det``.** For a face smaller than the crop only
  two decisions depend on ``scale = sqrt(|det|)``: ``scale > 1`` and ``round(size /
  scale)``. They are taken from ``a * d - b * c`` when it is clear of both boundaries by
  far more than the two determinants can differ; else (and for a larger face, whose
  ``cv2.resize`` takes ``scale`` itself) numpy's ``det`` runs.
* **Less area to shrink.** A face larger than the crop is shrunk (``cv2.INTER_AREA``) from
  a square of ``2 * size / scale`` around it, most of which the warp never reads. The
  square is cut at its far (right, bottom) sides to what the warp reads plus a margin:
  ``INTER_AREA`` computes each output pixel from the same source pixels with the same
  weights whatever lies beyond them (the cut keeps the left/top origin and ``fx``, and
  is not taken when the cut would make ``cv2.resize`` a plain copy or reach the image's
  border, where the warp's replicated border would change).

Everything else is the same calls on the same values; the grey crop stays uint8 (its
filters give the same exact integers from uint8 as from the float32 copy).
"""

from __future__ import annotations

import math
import struct
from functools import lru_cache
from typing import NamedTuple

import cv2
import numpy as np

from videodetector.core.models import (
    TEMPLATE_112,
    check_bgr,
    check_landmarks,
    similarity_transform,
    warp_face,
)

EPS = 2.0**-52
# How many times the worst-case double rounding of the closed form / SVD sums the guard
# allows for: on 20000 face-like, random, far-from-origin, collinear and mirrored point sets
# the two paths differed by at most 5.8 times the bounds' unit (tests check <= GUARD / 64).
GUARD = 4096.0
MIN_CROP = 16  # pixels: smallest crop for a face smaller than the crop (score.MIN_CROP)
WARP_MARGIN = 3  # pixels past the last one the bilinear warp's corners read


class Template(NamedTuple):
    """``TEMPLATE_112 * (size / 112)`` as ``similarity_transform`` sees it (float64), and
    what the closed form needs of it."""

    mean_x: float
    mean_y: float
    centred_x: list[float]
    centred_y: list[float]
    spread: float  # sum of squared distances to the mean
    reach: float  # largest |coordinate|


@lru_cache(maxsize=256)
def template(size: int) -> Template:
    dst = np.asarray(TEMPLATE_112 * (size / 112.0), np.float64)
    us, vs = dst[:, 0].tolist(), dst[:, 1].tolist()
    mu, du = _centred(us)
    mv, dv = _centred(vs)
    dd = sum(u * u + v * v for u, v in zip(du, dv, strict=True))
    return Template(mu, mv, du, dv, dd, max(map(abs, us + vs)))


def _centred(vs: list[float]) -> tuple[float, list[float]]:
    mean = sum(vs) / 5
    return mean, [v - mean for v in vs]


def error_bounds(r_s: float, r_d: float, ss: float, dd: float) -> tuple[float, float]:
    """How far the closed form's and the SVD path's float64 ``scale * rot`` entries and
    shifts may lie apart, generously (GUARD times the rounding either path can do);
    ``r_s``, ``r_d``: the largest source and template coordinate, ``ss``, ``dd``: their
    sums of squared centred distances.

    Both centre the points (a correctly rounded difference: its error is relative to the
    centred coordinate; the mean's own error shifts every point alike and cancels against
    the centred template to first order, leaving a second-order ``(EPS * r / spread)**2``),
    then sum products bounded by the spreads: the SVD is backward stable, so its ``scale *
    rot`` errs by a few EPS times ``|cov| / var <= cmax = spread_dst / spread_src``, which
    also bounds ``|scale|``. The shift ``mu_d - scale * rot @ mu_s`` adds those errors
    times ``|mu_s|`` and its own rounding."""
    cmax = math.sqrt(dd / ss)
    second = EPS * (r_s * r_s * 5 / ss + r_d * r_d * 5 / dd)
    tol_m = GUARD * EPS * cmax * (1.0 + second)
    tol_t = GUARD * EPS * (r_d + 3.0 * cmax * r_s) + 2.0 * tol_m * r_s
    return tol_m, tol_t


def closed_form_estimate(
    xs: list[float], ys: list[float], size: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The float64 2x3 similarity (row-major: ``a, -b, tx, b, a, ty``) mapping the points
    onto ``TEMPLATE_112 * (size / 112)`` in least squares, and each entry's error bound."""
    mu, mv, du, dv, dd, r_d = template(size)
    mx, sx = _centred(xs)
    my, sy = _centred(ys)
    ss = dot = crs = 0.0
    for x, y, u, v in zip(sx, sy, du, dv, strict=True):
        ss += x * x + y * y
        dot += x * u + y * v
        crs += x * v - y * u
    a, b = dot / ss, crs / ss
    tx, ty = mu - (a * mx - b * my), mv - (b * mx + a * my)
    tol_m, tol_t = error_bounds(max(map(abs, xs + ys)), r_d, ss, dd)
    return (a, -b, tx, b, a, ty), (tol_m, tol_m, tol_t, tol_m, tol_m, tol_t)


def closed_form_similarity(
    xs: list[float], ys: list[float], size: int
) -> np.ndarray | None:
    """``similarity_transform(pts, TEMPLATE_112 * (size / 112))`` (float32 2x3) from the
    closed form, or None when it cannot vouch for every bit: when an entry moved by its
    error bound may round to another float32 (see the module docstring)."""
    vals, tols = closed_form_estimate(xs, ys, size)
    try:
        low = struct.pack("6f", *[v - e for v, e in zip(vals, tols, strict=True)])
        high = struct.pack("6f", *[v + e for v, e in zip(vals, tols, strict=True)])
    except OverflowError:
        return None
    if low != high:
        return None
    return np.array(vals, np.float32).reshape(2, 3)


def similarity(pts: np.ndarray, size: int) -> np.ndarray:
    """``similarity_transform(pts, TEMPLATE_112 * (size / 112.0))``, bit for bit."""
    m = closed_form_similarity(pts[:, 0].tolist(), pts[:, 1].tolist(), size)
    if m is None:
        m = similarity_transform(pts, TEMPLATE_112 * (size / 112.0))
    return m


def exact_scale(m: np.ndarray) -> float:
    """The shrink factor as score.aligned_grey_face computed it (numpy's det)."""
    return math.sqrt(abs(np.linalg.det(m[:, :2].astype(np.float64))))


def smaller_crop(m: np.ndarray, size: int) -> int | None:
    """``max(round(size / scale), MIN_CROP)`` when ``exact_scale(m) > 1`` for sure, None
    when it is not, or when the closed-form determinant is too close to a boundary."""
    (p, q), (r, s) = m[:, :2].tolist()
    scale = math.sqrt(abs(p * s - q * r))  # products of float32 are exact in float64
    if not scale > 1.0 + 1e-9:
        return None
    ratio = size / scale
    if abs(ratio - math.floor(ratio) - 0.5) < 1e-9:
        return None
    return max(round(ratio), MIN_CROP)


def _warp_reach(m: np.ndarray, size: int) -> tuple[float, float]:
    """The largest x and y (source pixels) the warp of a ``size`` crop by ``m`` reads."""
    (p, q, tx), (r, s, ty) = m.astype(np.float64).tolist()
    det = p * s - q * r
    if not det or not math.isfinite(det):
        return math.inf, math.inf
    ia, ib, ic, id_ = s / det, -q / det, -r / det, p / det
    ox, oy = -(ia * tx + ib * ty), -(ic * tx + id_ * ty)
    corners = [(0.0, 0.0), (size - 1.0, 0.0), (0.0, size - 1.0), (size - 1.0, size - 1.0)]
    xs = [ia * x + ib * y + ox for x, y in corners]
    ys = [ic * x + id_ * y + oy for x, y in corners]
    return max(xs), max(ys)


def _cut(length: int, reach: float, scale: float) -> int:
    """Source pixels to keep along one axis of the area shrink (see the module docstring):
    all of ``length`` unless the warp's reach (in shrunk pixels) ends well inside it."""
    if not math.isfinite(reach):
        return length
    need = math.floor(max(reach, 0.0)) + WARP_MARGIN  # last shrunk pixel read, with margin
    if need + 2 >= length * scale - 1:  # near the far border: its replication is read
        return length
    return min(length, math.ceil((need + 2) / scale) + 3)


def shrunk_for_crop(
    image_bgr: np.ndarray, pts: np.ndarray, size: int, scale: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The image and landmarks after the area pre-shrink of a face larger than the crop
    (``scale < 1``), the shrunk image cut to what the warp reads (identical pixels there);
    and the warp's matrix when it was estimated on the way."""
    h, w = image_bgr.shape[:2]
    cx, cy = pts.mean(axis=0)
    half = size / scale  # generous: the crop's half-diagonal is 0.71 * size / scale
    x0, y0 = int(max(cx - half, 0)), int(max(cy - half, 0))
    x1, y1 = int(min(cx + half, w)), int(min(cy + half, h))
    if min(x1 - x0, y1 - y0) * scale < 2:  # else nothing of the face is in the image
        return image_bgr, pts, None
    pts = (pts - (x0, y0)) * scale
    m = similarity(check_landmarks(pts.astype(np.float32)), size)
    reach_x, reach_y = _warp_reach(m, size)
    cw, ch = _cut(x1 - x0, reach_x, scale), _cut(y1 - y0, reach_y, scale)
    if (1.0 - scale) * max(cw, ch) < 1.0 or image_bgr.shape[2:] != (3,):
        # cv2.resize would copy instead of shrinking; or the warp refuses the image (its
        # message shows the shape shrunk whole)
        cw, ch = x1 - x0, y1 - y0
    roi = image_bgr[y0:y0 + ch, x0:x0 + cw]
    return cv2.resize(roi, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA), pts, m


def warped_grey(
    image_bgr: np.ndarray, pts32: np.ndarray, size: int, m: np.ndarray | None = None
) -> np.ndarray:
    """``cv2.cvtColor(models.align_face(image_bgr, pts32, size), BGR2GRAY)``, uint8;
    ``m``: the warp's matrix when already estimated from these ``pts32`` and ``size``."""
    check_bgr(image_bgr)
    pts = check_landmarks(pts32)
    if m is None:
        m = similarity(pts, size)
    return cv2.cvtColor(warp_face(image_bgr, m, size), cv2.COLOR_BGR2GRAY)


def aligned_grey_crop(
    image_bgr: np.ndarray, pts: np.ndarray, size: int, upsample: bool
) -> np.ndarray:
    """score.aligned_grey_face's crop, uint8, from landmarks that passed
    :func:`models.check_landmarks` and an HxWx3 uint8 image."""
    m = similarity(pts, size)
    smaller = None if upsample else smaller_crop(m, size)
    warp = None
    if smaller is not None:
        size = smaller
    else:
        scale = exact_scale(m)
        if scale > 1.0 and not upsample:
            size = max(round(size / scale), MIN_CROP)
        elif scale < 1.0:
            image_bgr, pts, warp = shrunk_for_crop(image_bgr, pts, size, scale)
    return warped_grey(image_bgr, pts.astype(np.float32), size, warp)
