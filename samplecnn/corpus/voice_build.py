"""The recipe: `samplecnn corpus voices --out DIR` builds DIR/audio/, DIR/manifest.csv and DIR/excluded.csv.

Each package is fetched (apt-get download, or --debs), unpacked into a temporary folder inside DIR (dpkg-deb -x), and
its voice clips written as FLAC (voice_unpack) to DIR/audio/.<package>.partial, which is renamed to
DIR/audio/<package> when complete; then DIR/packages/<package>.json records what was kept and DIR/licences/ gets the
package's debian/copyright (attribution for CC-BY and CC-BY-SA travels with the clips). An interrupted run loses at
most the package it was on. A rerun skips every package whose record matches the version apt (or --debs) offers
now, the package's source rule and --min-seconds; the tables are rebuilt from the records each time and written last.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from ..errors import SampleCNNError
from ..fileio import atomic_path
from ..segments import SAMPLE_RATE
from . import debs as debtools
from . import records, voice_tables
from .voice_sources import DEFAULT_PACKAGES, Source, select, source_for
from .voice_unpack import unpack

__all__ = ["RECIPE_VERSION", "build"]

RECIPE_VERSION = 1  # bump when a change to the code alters what a package yields: records of older runs are redone
def _fingerprint(source: Source, min_seconds: float) -> str:
    text = json.dumps({"recipe": RECIPE_VERSION, "source": asdict(source), "min_seconds": min_seconds,
                       "rate": SAMPLE_RATE}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _keep_copyright(root: Path, out: Path, package: str) -> None:
    src = root / "usr/share/doc" / package / "copyright"
    if src.is_file() and not src.is_symlink():
        with atomic_path(out / "licences" / f"{package}.copyright", overwrite=True) as tmp:
            shutil.copyfile(src, tmp)


def _do_package(out: Path, package: str, source: Source, fingerprint: str, deb: Path | None, min_seconds: float,
                progress: bool, say: Callable[[str], None]) -> dict:
    def take(root: Path, version: str, staging: Path) -> dict:
        record = unpack(root, package, version, source, staging, min_seconds, progress=progress, say=say)
        _keep_copyright(root, out, package)
        return record

    return records.redo_package(out, package, fingerprint, deb, min_seconds, take)


def build(out: str | os.PathLike, packages: list[str] | None = None, debs: str | os.PathLike | None = None,
          min_seconds: float = 0.5, force: bool = False, progress: bool = True,
          log: Callable[[str], None] = print) -> voice_tables.Summary:
    """Build (or finish, or refresh) the voice corpus in `out`; returns the summary of the whole corpus.

    `packages`: a subset of voice_sources.DEFAULT_PACKAGES (default: all); any other name is refused. `debs`: a
    folder of .deb files used instead of downloading. `force`: redo every package even when its record is current.
    Records of packages not asked for this time stay, and their clips stay in the tables."""

    if not min_seconds >= 0:
        raise SampleCNNError(f"--min-seconds must be 0 or more, got {min_seconds}")
    names = select(packages)
    out = Path(out)
    local, versions = debtools.versions_to_build(names, debs, log, recipe="the voice recipe")
    (out / "audio").mkdir(parents=True, exist_ok=True)
    records.clear_stale(out)

    yielded, skipped = records.each_package(
        out, names, versions, lambda p: _fingerprint(source_for(p), min_seconds),
        lambda p, fingerprint, say: _do_package(out, p, source_for(p), fingerprint, local.get(p, (None,))[0],
                                                min_seconds, progress, say),
        lambda kept: f"{len(kept)} clips, {sum(r['duration'] for r in kept) / 60:.1f} min", force, progress, log)
    for package in _other_records(out, set(names)):  # finished by an earlier run with --packages
        yielded[package] = records.load_record(out, package)
    summary = voice_tables.write(out, [r for r in yielded.values() if r is not None])
    summary.skipped = skipped
    return summary


def _other_records(out: Path, done: set[str]) -> list[str]:
    """Packages of the recipe, not in this run, whose record and folder are in place."""
    return [p for p in DEFAULT_PACKAGES
            if p not in done and records.record_path(out, p).is_file() and (out / "audio" / p).is_dir()]
