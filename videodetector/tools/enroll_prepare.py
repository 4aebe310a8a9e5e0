"""``prepare``: find images by glob patterns, give each its meta string, write the job file(s).

Meta sources (at most one; none = empty meta), as in the reference (8.4.1):

* ``--meta-const TEXT``: the same string for every image;
* ``--meta-companion EXT``: the text of ``photo1.EXT`` next to ``photo1.jpg`` (stripped);
* ``--meta-csv FILE``: rows ``metastring,image``; a relative image path is taken relative to
  the CSV file's folder and to the current folder; images not listed get an empty meta;
* ``--meta-filename``: the file name without its extension.
"""

from __future__ import annotations

import csv
import glob
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from videodetector.tools.enroll_job import JobFile

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
MAX_META_CHARS = 4096

Say = Callable[[str], None]


@dataclass(frozen=True)
class MetaOptions:
    const: str | None = None
    companion: str | None = None
    csv: str | None = None
    filename: bool = False

    def __post_init__(self) -> None:
        given = [name for name, on in (("--meta-const", self.const is not None),
                                       ("--meta-companion", self.companion is not None),
                                       ("--meta-csv", self.csv is not None),
                                       ("--meta-filename", self.filename)) if on]
        if len(given) > 1:
            raise ValueError(f"give at most one meta source, not {' and '.join(given)}")
        if self.companion is not None and not self.companion.strip(". "):
            raise ValueError(f"--meta-companion must be a file extension such as txt, "
                             f"not {self.companion!r}")


def find_images(patterns: Sequence[str], say: Say = print) -> list[str]:
    """Absolute, normalised paths of the image files matching the glob patterns (``**``
    matches any number of folders), sorted and without duplicates."""
    found: set[str] = set()
    ignored = 0
    for pattern in patterns:
        say(f"Looking for images matching {pattern!r}")
        for name in glob.iglob(os.path.expanduser(pattern), recursive=True):
            if not os.path.isfile(name):
                continue
            if os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                ignored += 1
                continue
            found.add(os.path.normpath(os.path.abspath(name)))
    if ignored:
        say(f"{ignored} matching files are not images ({', '.join(sorted(IMAGE_EXTENSIONS))})"
            " and were left out")
    return sorted(found)


def read_meta_csv(path: str) -> dict[str, str]:
    """{absolute image path: meta} from ``metastring,image`` rows."""
    base = os.path.dirname(os.path.abspath(path))
    out: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        for lineno, row in enumerate(csv.reader(f), 1):
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != 2:
                raise ValueError(f"{path}:{lineno}: expected 2 columns (metastring,image), "
                                 f"got {len(row)}: {row!r}")
            meta, image = row[0], row[1].strip()
            keys = {os.path.normpath(os.path.join(base, image)),
                    os.path.normpath(os.path.abspath(image))}
            for key in keys:
                if out.get(key, meta) != meta:
                    raise ValueError(f"{path}:{lineno}: {image!r} already has the meta "
                                     f"{out[key]!r}, not {meta!r}")
                out[key] = meta
    return out


def companion_meta(image: str, ext: str) -> str | None:
    """The stripped text of the companion file; None when it is missing, unreadable or
    longer than MAX_META_CHARS."""
    companion = os.path.splitext(image)[0] + "." + ext.strip(". ")
    try:
        with open(companion, encoding="utf-8") as f:
            text = f.read(MAX_META_CHARS + 1).strip()
        return text if len(text) <= MAX_META_CHARS else None
    except (OSError, UnicodeDecodeError):
        return None


def assign_meta(images: Sequence[str], opts: MetaOptions, say: Say = print
                ) -> list[tuple[str, str]]:
    """(image, meta) for each image; says how many images got no meta from their source."""
    if opts.const is not None:
        return [(img, opts.const) for img in images]
    if opts.filename:
        return [(img, Path(img).stem) for img in images]
    if opts.csv is not None:
        table = read_meta_csv(opts.csv)
        out = [(img, table.get(img, "")) for img in images]
        missing = sum(img not in table for img in images)
        if missing:
            say(f"{missing} images are not listed in {opts.csv}: their meta is empty")
        return out
    if opts.companion is not None:
        out, missing = [], []
        for img in images:
            meta = companion_meta(img, opts.companion)
            if meta is None:
                missing.append(img)
            out.append((img, meta or ""))
        if missing:
            say(f"{len(missing)} images have no readable .{opts.companion.strip('. ')} "
                f"companion: their meta is empty (first: {missing[0]})")
        return out
    return [(img, "") for img in images]


def split_parts(items: Sequence[tuple[str, str]], parts: int) -> list[list[tuple[str, str]]]:
    """``parts`` consecutive chunks whose sizes differ by at most one."""
    if parts < 1:
        raise ValueError(f"--split must be at least 1, not {parts}")
    if parts > len(items):
        raise ValueError(f"--split {parts}: only {len(items)} images to split")
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for k in range(parts):
        end = start + size + (1 if k < extra else 0)
        out.append(list(items[start:end]))
        start = end
    return out


def part_path(job: str | Path, k: int) -> Path:
    """The k-th (1-based) part of a split job: ``JOB.k``."""
    return Path(f"{job}.{k}")


def prepare(job: str | Path, patterns: Sequence[str], opts: MetaOptions,
            split: int | None = None, say: Say = print) -> list[Path]:
    """Write the job file (added to when it exists) or, with ``split``, N new part files.
    Returns the job files written."""
    images = find_images(patterns, say)
    if not images:
        raise ValueError(f"no images match {' '.join(map(repr, patterns))}")
    items = assign_meta(images, opts, say)
    say(f"{len(items)} files prepared for upload")
    if not split:
        with JobFile(job, create=True) as jf:
            added = jf.add(items)
            if added < len(items):
                say(f"{len(items) - added} of them were already in the job file")
            say(f"{jf.count()} files in job file {job}")
        return [Path(job)]
    chunks = split_parts(items, split)
    paths = [part_path(job, k) for k in range(1, split + 1)]
    existing = [str(p) for p in paths if p.exists()]
    if existing:
        raise ValueError(f"--split would overwrite {', '.join(existing)}; remove them first")
    for path, chunk in zip(paths, chunks, strict=True):
        with JobFile(path, create=True) as jf:
            jf.add(chunk)
            say(f"{jf.count()} files in job file {path}")
    return paths
