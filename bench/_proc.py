"""A process's resident memory and CPU time from Linux ``/proc``, for the benches.

``gone`` says what a process that no longer exists reads as: a number (the default 0.0) for
a bench that sums over processes which may end during the run (bench_streams' camera
processes), or None to raise ``ProcessLookupError`` naming the pid, for a bench that
measures one server that must be alive (bench_backend, bench_ingest, soak: a dead server
must not read as 0 MB or 0 s). ``pid`` may be ``"self"``. Elsewhere than Linux (no
``/proc``) every process reads as gone.
"""

from __future__ import annotations

import os


def stat_user_sys(path: str) -> tuple[float, float]:
    """(user, system) CPU seconds of a ``/proc/<pid>[/task/<tid>]/stat`` file (all of the
    process's threads, or one thread). Raises OSError when it cannot be read."""
    with open(path, "rb") as f:
        stat = f.read()
    fields = stat[stat.rindex(b")") + 2:].split()  # the name may hold spaces and ")"
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def process_cpu(pid: int | str = "self", gone: float | None = 0.0) -> float:
    """CPU seconds (user + system, all threads) of process ``pid`` so far."""
    try:
        return sum(stat_user_sys(f"/proc/{pid}/stat"))
    except (FileNotFoundError, ProcessLookupError):  # no such pid; read as it ended
        return _gone(pid, gone)


def rss_bytes(pid: int | str = "self", gone: float | None = 0.0) -> float:
    """Resident memory of process ``pid`` in bytes (``statm``'s resident pages: VmRSS)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            pages = int(f.read().split()[1])
    except (FileNotFoundError, ProcessLookupError):  # no such pid; read as it ended
        return _gone(pid, gone)
    return float(pages * os.sysconf("SC_PAGE_SIZE"))


def rss_mb(pid: int | str = "self", gone: float | None = 0.0) -> float:
    """Resident memory of process ``pid`` in MB (2**20 bytes)."""
    value = rss_bytes(pid, None if gone is None else gone * 2**20)
    return value / 2**20


def _gone(pid: int | str, gone: float | None) -> float:
    if gone is None:
        raise ProcessLookupError(f"process {pid} is gone (no /proc/{pid})")
    return gone
