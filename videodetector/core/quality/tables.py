"""Piecewise-linear score tables: ``np.interp`` for one number, in plain Python.

``np.interp`` on a scalar costs a few microseconds of array conversion per call, and a face's
quality looks up five tables. :func:`interp` returns the same double, bit for bit (checked
against ``np.interp`` by tests/core/quality/test_same_scores.py): the same interval search
(``xp[j] <= x < xp[j + 1]``; below the table ``fp[0]``, above ``fp[-1]``; on a knot, or on
the last one, its ``fp``), the same ``slope * (x - xp[j]) + fp[j]`` in the same order (with
numpy's retry from the right-hand knot when that is NaN), NaN in -> NaN out.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence


def interp(x: float, xp: Sequence[float], fp: Sequence[float]) -> float:
    """``float(np.interp(x, xp, fp))`` for increasing ``xp`` of at least two knots."""
    if x != x:  # NaN
        return x
    if x > xp[-1]:
        return fp[-1]
    if x < xp[0]:
        return fp[0]
    j = bisect_right(xp, x) - 1
    if j == len(xp) - 1 or xp[j] == x:
        return fp[j]
    slope = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j])
    value = slope * (x - xp[j]) + fp[j]
    if value != value:  # numpy tries from the other side, then a flat segment's value
        value = slope * (x - xp[j + 1]) + fp[j + 1]
        if value != value and fp[j] == fp[j + 1]:
            value = fp[j]
    return value
