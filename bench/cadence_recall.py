"""Recall guard for detector cadence changes: per shared clip, what the offline pipeline posts.

    python bench/cadence_recall.py --out after.json [-- extra detector options]
    python bench/cadence_recall.py --compare before.json after.json

Runs ``FacePipeline`` offline (``-r 0``, defaults plus the extra options, one onnxruntime
thread) over each clip of ``../shared/data`` and records: frames, detector runs, runs on
crops (``region_runs``), runs on the tracked faces only (``face_runs``), tracks started, the
posted snapshots (track id, frame position, quality score, direction score) and the CPU
seconds of the loop (decode included). To compare two versions of the code, run it under
each (``PYTHONPATH=<tree>``) and then ``--compare``: a table of snapshot counts (and their
change in %), and per clip the mean quality of the posted snapshots and the positions that
changed. Nothing is written into the repository.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import _env_omp1  # noqa: F401  (before numpy: sys.path, thread pools; bench/_env.py)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CLIPS = ["clips_smallfaces/mpf_five-second-marathon-clip.mkv", "clips_faces/mpf_video_01.mp4",
         "clips_faces/mpf_ff-region-face-motion.avi", "clips_faces/grid_bbaf2n.mpg",
         "clips_faces/grid_brbk7n.mpg", "clips_faces/grid_id2_vcd_swwp2s.mpg",
         "clips_faces/grid_lbax4n.mpg", "clips_faces/grid_lbbc2a.mpg",
         "clips_noface/imageio_cockatoo.mp4"]


def run_clip(path: Path, extra: Sequence[str]) -> dict:
    """One offline pass of the pipeline over ``path``: counts, posts and CPU seconds."""
    from videodetector.core.models import YuNetDetector
    from videodetector.detector.config import parse_config
    from videodetector.detector.pipeline import CameraSpec, FacePipeline
    from videodetector.detector.video.source import open_video, parse_source

    cfg = parse_config(["--source", str(path), "--camid", "c1", "--api-url", "127.0.0.1:9",
                        "--api-token", "t", *extra])
    pipe = FacePipeline(cfg, CameraSpec("c1", str(path), cfg.roi, cfg.rot), YuNetDetector(),
                        live=False)
    snaps = []
    c0 = time.process_time()
    with open_video(parse_source(str(path))) as stream:
        for frame in stream:
            snaps += pipe.process(frame)
    snaps += pipe.finish()
    cpu = time.process_time() - c0
    st = pipe.stats
    return {"frames": st.frames, "detector_runs": st.detector_runs,
            "region_runs": st.region_runs, "face_runs": getattr(st, "face_runs", 0),
            "tracks": st.tracks_started, "snapshots": len(snaps), "cpu_s": round(cpu, 3),
            "posts": [[s.track_id, s.position, s.score, s.direction_score] for s in snaps]}


def compare(before: dict, after: dict) -> int:
    """Print the comparison; 1 when a clip's snapshot count moved by more than 10 %."""
    bad = 0
    print("| clip | det runs | face-only runs | tracks | snapshots | change | mean quality |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for clip, b in before.items():
        a = after[clip]
        change = (a["snapshots"] - b["snapshots"]) / max(b["snapshots"], 1) * 100
        bad |= abs(change) > 10
        qb = sum(p[2] for p in b["posts"]) / max(len(b["posts"]), 1)
        qa = sum(p[2] for p in a["posts"]) / max(len(a["posts"]), 1)
        print(f"| {Path(clip).name} | {b['detector_runs']} -> {a['detector_runs']} | "
              f"{a['face_runs']} | {b['tracks']} -> {a['tracks']} | "
              f"{b['snapshots']} -> {a['snapshots']} | {change:+.0f} % | {qb:.4f} -> {qa:.4f} |")
    for clip, b in before.items():
        pb = {tuple(p[:2]): p[2] for p in b["posts"]}
        pa = {tuple(p[:2]): p[2] for p in after[clip]["posts"]}
        if pb != pa:
            print(f"{Path(clip).name}: posts (track, frame: quality) before "
                  f"{sorted(pb.items())} after {sorted(pa.items())}")
    return int(bad)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--out", type=Path, help="write the results here (JSON)")
    p.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    p.add_argument("extra", nargs="*", help="detector options (after --)")
    args = p.parse_args(argv)
    if args.compare:
        return compare(*(json.loads(f.read_text()) for f in args.compare))
    results = {}
    for clip in CLIPS:
        if (args.data / clip).exists():
            results[clip] = run_clip(args.data / clip, args.extra)
            r = results[clip]
            print(f"{clip}: {r['detector_runs']} runs ({r['face_runs']} faces only), "
                  f"{r['tracks']} tracks, {r['snapshots']} snapshots, {r['cpu_s']} s CPU",
                  file=sys.stderr)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
