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
    from tqdm import tqdm

    if not min_seconds >= 0:
        raise SampleCNNError(f"--min-seconds must be 0 or more, got {min_seconds}")
    names = select(packages)
    out = Path(out)
    local, versions = debtools.versions_to_build(names, debs, log)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    records.clear_stale(out)

    say = tqdm.write if progress else log
    yielded, skipped = [], []
    bar = tqdm(names, unit="pkg", disable=not progress, position=0)
    for package in bar:
        bar.set_postfix_str(package)
        rule = rule_for(package)
        fingerprint = _fingerprint(rule, min_seconds)
        version = versions[package]
        record = None if force else records.current_record(out, package, fingerprint, version)
        if record is not None:
            skipped.append(package)
            say(f"{package} {version}: already extracted, skipped")
        else:
            record = _do_package(out, package, rule, fingerprint, local.get(package, (None,))[0], min_seconds,
                                 progress)
            hours = sum(r["duration"] for r in record["kept"]) / 3600
            say(f"{package} {record['version']}: {len(record['kept'])} tracks, {hours:.2f} h "
                f"({record['seconds']:.0f} s)")
        yielded.append(record)
    bar.close()
    summary = manifest.write(out, yielded)
    summary.skipped = skipped
    return summary
