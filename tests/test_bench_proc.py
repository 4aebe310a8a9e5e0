"""bench/_proc.py: the benches' one reader of a process's RSS and CPU time in /proc."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc")


def _vmrss_mb(pid: int | str) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_running_process_reads_its_rss_and_cpu(bench) -> None:
    proc = bench("_proc")
    child = subprocess.Popen([sys.executable, "-c",
                              "import time\nt = time.process_time()\n"
                              "while time.process_time() - t < 0.3: pass\n"
                              "time.sleep(60)"])
    try:
        deadline = time.monotonic() + 60  # 0.3 s of CPU: seconds on a loaded machine
        while proc.process_cpu(child.pid) < 0.25 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert 0.25 <= proc.process_cpu(child.pid, gone=None) < 5
        assert proc.rss_mb(child.pid) == pytest.approx(_vmrss_mb(child.pid), abs=0.5)
        assert proc.rss_mb(child.pid) > 1
    finally:
        child.kill()
        child.wait()
    assert proc.rss_mb() == pytest.approx(_vmrss_mb("self"), rel=0.05)
    assert proc.rss_bytes() == pytest.approx(proc.rss_mb() * 2**20, rel=0.05)


def test_a_gone_process_reads_as_asked(bench) -> None:
    """Tolerant (bench_streams sums camera processes that may end): 0 or the given value;
    strict (a bench's one server): ProcessLookupError naming the pid."""
    proc = bench("_proc")
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: its /proc entry is gone
    pid = child.pid
    assert proc.rss_mb(pid) == 0.0 and proc.process_cpu(pid) == 0.0
    assert proc.rss_mb(pid, gone=-1.0) == -1.0 and proc.process_cpu(pid, gone=7.0) == 7.0
    for read in (proc.rss_mb, proc.process_cpu, proc.rss_bytes):
        with pytest.raises(ProcessLookupError, match=str(pid)):
            read(pid, gone=None)
    # the benches' wrappers keep their behaviour: strict for a server, tolerant for cameras
    with pytest.raises(ProcessLookupError):
        bench("bench_backend").rss_mb(pid)
    with pytest.raises(ProcessLookupError):
        bench("bench_ingest").cpu_seconds(pid)
    streams = bench("bench_streams")
    assert streams.rss_mb(pid) == 0.0 and streams.process_cpu(pid) == 0.0
