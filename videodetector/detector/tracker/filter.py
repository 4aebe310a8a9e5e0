"""A constant-velocity Kalman filter for one face box, built on filterpy.

State vector (8 numbers, pixels and pixels per frame)::

    x = [cx, cy, w, h, vcx, vcy, vw, vh]

``cx, cy`` is the box centre, ``w, h`` its width and height, and the ``v*`` are their
rates of change per video frame. The measurement is the detector box as
``[cx, cy, w, h]``. Width and height are kept separately (not SORT's area+aspect) because
that is easier to read and faces keep a near-constant aspect anyway.

All noise levels are proportional to the box size (as in DeepSORT), so a 20 px face and a
400 px face are tracked with the same *relative* tolerance.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from filterpy.kalman import KalmanFilter

# Standard deviation of the detector's box jitter, as a fraction of the box side.
MEASUREMENT_STD = 0.05
# How much the velocity may change, as a fraction of the box side per frame per sqrt(frame)
# (continuous white-noise acceleration). Faces start, stop and turn at walking pace.
ACCELERATION_STD = 0.05
# Uncertainty of a new track: position about one detector jitter, velocity unknown
# (up to about a quarter of the box side per frame).
INITIAL_POSITION_STD = 0.1
INITIAL_VELOCITY_STD = 0.25
MIN_SIDE = 1.0  # pixels; predicted boxes never shrink below this


def xyxy_to_z(xyxy: np.ndarray) -> np.ndarray:
    """[x1, y1, x2, y2] -> [cx, cy, w, h]."""
    x1, y1, x2, y2 = np.asarray(xyxy, np.float64).reshape(4)
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])


def z_to_xyxy(z: np.ndarray) -> np.ndarray:
    """[cx, cy, w, h] -> [x1, y1, x2, y2], with w and h at least MIN_SIDE."""
    cx, cy = z[0], z[1]
    w, h = max(z[2], MIN_SIDE), max(z[3], MIN_SIDE)
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


@functools.lru_cache(maxsize=64)
def transition_matrix(dt: float) -> np.ndarray:
    """F for a step of ``dt`` frames: position += velocity * dt, velocity unchanged.
    Cached per dt (every track predicts every frame, mostly by 1): read-only."""
    f = np.eye(8)
    f[:4, 4:] = dt * np.eye(4)
    f.flags.writeable = False
    return f


@functools.lru_cache(maxsize=64)
def _unit_process_noise(dt: float) -> np.ndarray:
    """``process_noise(dt, side)`` for unit acceleration noise, cached per dt: read-only."""
    block = np.array([[dt**3 / 3, dt**2 / 2], [dt**2 / 2, dt]])
    q = np.kron(block, np.eye(4))
    q.flags.writeable = False
    return q


def process_noise(dt: float, side: float) -> np.ndarray:
    """Q for ``dt`` frames of continuous white-noise acceleration (per coordinate).

    For one coordinate p with velocity v, an acceleration noise of spectral density q
    integrated over dt gives cov([p, v]) = q * [[dt^3/3, dt^2/2], [dt^2/2, dt]]; the four
    coordinates are independent, which ``np.kron`` lays out in our state order (the kron
    is made once per dt: it was most of a track's predict).
    """
    return (ACCELERATION_STD * side) ** 2 * _unit_process_noise(dt)


class BoxKalmanFilter:
    """Kalman filter of one face box. ``predict(dt_frames)`` then ``update(xyxy)``.

    The matrices, in filterpy's names:

    * F (8x8, transition): constant velocity. ``[cx, cy, w, h] += dt * [vcx, vcy, vw, vh]``;
      velocities are carried over. Rebuilt for every predict because dt varies (the
      detector may run only every ``period`` frames).
    * H (4x8, measurement): the detector sees the first four state entries, not velocities:
      ``H = [I4 | 0]``.
    * Q (8x8, process noise): how far reality may drift from constant velocity in dt frames;
      see ``process_noise``. Grows with dt (as dt^3 for position), so after a long skip
      the filter trusts the next detection more than its own prediction.
    * R (4x4, measurement noise): detector jitter, diagonal, std MEASUREMENT_STD * side.
    * P (8x8, state covariance): starts diagonal with INITIAL_POSITION_STD * side for the box
      and INITIAL_VELOCITY_STD * side for the (unknown) velocities; filterpy updates it.
    """

    def __init__(self, xyxy: np.ndarray) -> None:
        z = xyxy_to_z(xyxy)
        if z[2] <= 0 or z[3] <= 0:
            raise ValueError(f"box must have x2 > x1 and y2 > y1, got {list(xyxy)}")
        self._z0 = z
        self._kf_made: KalmanFilter | None = None

    @property
    def _kf(self) -> KalmanFilter:
        """filterpy's filter, made on first use: a new track's box is its first detection,
        so a filter never predicted nor updated needs no KalmanFilter (nor the scipy that
        filterpy imports, ~0.9 s: see detector/preload.py). Made from the same numbers, at
        any time, it is the same filter."""
        if self._kf_made is None:
            self._kf_made = self._make(self._z0)
        return self._kf_made

    @classmethod
    def _make(cls, z: np.ndarray) -> KalmanFilter:
        from filterpy.kalman import KalmanFilter  # noqa: PLC0415 - lazy: see _kf

        side = cls._side(z)
        kf = KalmanFilter(dim_x=8, dim_z=4)
        kf.x = np.concatenate([z, np.zeros(4)]).reshape(8, 1)
        kf.F = transition_matrix(1.0).copy()  # (the cached one is read-only)
        kf.H = np.hstack([np.eye(4), np.zeros((4, 4))])
        kf.P = np.diag(
            [(INITIAL_POSITION_STD * side) ** 2] * 4 + [(INITIAL_VELOCITY_STD * side) ** 2] * 4
        )
        kf.Q = process_noise(1.0, side)
        kf.R = np.eye(4) * (MEASUREMENT_STD * side) ** 2
        return kf

    @staticmethod
    def _side(z: np.ndarray) -> float:
        """Mean of width and height, the scale for all noise levels."""
        return max((float(z[2]) + float(z[3])) / 2, MIN_SIDE)

    @property
    def xyxy(self) -> np.ndarray:
        """The current box estimate as [x1, y1, x2, y2]."""
        if self._kf_made is None:  # the first detection, as the new filter's state has it
            return z_to_xyxy(self._z0)
        return z_to_xyxy(self._kf.x[:4, 0])

    @property
    def velocity(self) -> np.ndarray:
        """[vcx, vcy, vw, vh] in pixels per frame."""
        if self._kf_made is None:
            return np.zeros(4)
        return self._kf.x[4:, 0].copy()

    def predict(self, dt_frames: float = 1) -> np.ndarray:
        """Advance the state by ``dt_frames`` frames and return the predicted box."""
        if not dt_frames > 0:
            raise ValueError(f"dt_frames must be positive, got {dt_frames}")
        side = self._side(self._kf.x[:, 0])
        self._kf.predict(F=transition_matrix(dt_frames), Q=process_noise(dt_frames, side))
        # A shrinking box must not turn inside out while coasting without detections.
        for i in (2, 3):
            if self._kf.x[i, 0] < MIN_SIDE:
                self._kf.x[i, 0] = MIN_SIDE
                self._kf.x[i + 4, 0] = 0.0
        return self.xyxy

    def update(self, xyxy: np.ndarray) -> np.ndarray:
        """Correct the state with a detected box and return the filtered box."""
        z = xyxy_to_z(xyxy)
        side = self._side(z)
        self._kf.update(z.reshape(4, 1), R=np.eye(4) * (MEASUREMENT_STD * side) ** 2)
        return self.xyxy
