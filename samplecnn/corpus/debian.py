"""The recipe: `samplecnn corpus debian --out DIR` builds DIR/audio/, DIR/manifest.csv and DIR/excluded.csv.

Each package is done in three steps: fetch its .deb (apt-get download, or --debs), unpack it into a temporary folder
inside DIR (dpkg-deb -x), copy its music out (unpack.py). Its music goes to DIR/audio/.<package>.partial, which is
renamed to DIR/audio/<package> when complete, and then DIR/packages/<package>.json records what was kept, so an
interrupted run loses at most the package it was on. A rerun skips every package whose record matches the version
apt (or --debs) offers now, the package's rule and --min-seconds; the tables are rebuilt from the records each time
(seconds) and written last.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from ..errors import SampleCNNError
from . import debs as debtools
from . import manifest, records
from .packages import Rule, rule_for, select
from .unpack import unpack

__all__ = ["RECIPE_VERSION", "build"]

RECIPE_VERSION = 1  # bump when a change to the code alters what a package yields: records of older runs are redone
def _fingerprint(rule: Rule, min_seconds: float) -> str:
    text = json.dumps({"recipe": RECIPE_VERSION, "rule": asdict(rule), "min_seconds": min_seconds}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _do_package(out: Path, package: str, rule: Rule, fingerprint: str, deb: Path | None, min_seconds: float,
                progress: bool) -> dict:
    def take(root: Path, version: str, staging: Path) -> dict:
        return unpack(root, package, version, rule, staging, min_seconds, progress=progress)

    return records.redo_package(out, package, fingerprint, deb, min_seconds, take)


def build(out: str | os.PathLike, packages: list[str] | None = None, debs: str | os.PathLike | None = None,
          min_seconds: float = 30.0, force: bool = False, progress: bool = True,
          log: Callable[[str], None] = print) -> manifest.Summary:
    """Build (or finish, or refresh) the corpus in `out`; returns the summary of the whole corpus.

    `packages`: a subset of packages.DEFAULT_PACKAGES (default: all); any other name is refused. `debs`: a folder of
    .deb files used instead of downloading (.deb files of other packages there are ignored). `force`: redo every
    package even when its record is current."""
    if not min_seconds >= 0:
        raise SampleCNNError(f"--min-seconds must be 0 or more, got {min_seconds}")
    names = select(packages)
    out = Path(out)
    local, versions = debtools.versions_to_build(names, debs, log)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    records.clear_stale(out)

    done, skipped = records.each_package(
        out, names, versions, lambda p: _fingerprint(rule_for(p), min_seconds),
        lambda p, fingerprint, say: _do_package(out, p, rule_for(p), fingerprint, local.get(p, (None,))[0],
                                                min_seconds, progress),
        lambda kept: f"{len(kept)} tracks, {sum(r['duration'] for r in kept) / 3600:.2f} h", force, progress, log)
    yielded = list(done.values())
    summary = manifest.write(out, yielded)
    summary.skipped = skipped
    return summary
