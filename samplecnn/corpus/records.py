"""What a corpus built from Debian packages remembers per package, so that a rerun skips finished work.

`packages/<package>.json` records what a package yielded, with a fingerprint of the recipe that produced it and the
package's version; a package is redone when either changed, when its audio folder is gone, or when asked to.
redo_package is the one way both recipes (debian.py, voice_build.py) redo a package, so that the record is
written only once the package's folder is complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import SampleCNNError
from ..fileio import atomic_path
from . import debs as debtools

__all__ = ["TMP_PREFIX", "record_path", "load_record", "current_record", "clear_stale", "redo_package"]

TMP_PREFIX = ".tmp-"  # per-package scratch folders inside the corpus folder


def record_path(out: Path, package: str) -> Path:
    return out / "packages" / f"{package}.json"


def load_record(out: Path, package: str) -> dict | None:
    """The package's record, or None where there is none (or it cannot be read)."""
    try:
        return json.loads(record_path(out, package).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def current_record(out: Path, package: str, fingerprint: str, version: str) -> dict | None:
    """The package's record when it still describes the disk for this recipe and version, else None."""
    record = load_record(out, package)
    if (record is not None and record.get("fingerprint") == fingerprint and record.get("version") == version
            and (out / "audio" / package).is_dir()):
        return record
    return None


def clear_stale(out: Path) -> None:
    """Remove the scratch folders a killed run left behind."""
    for stale in out.glob(TMP_PREFIX + "*"):
        shutil.rmtree(stale, ignore_errors=True)


def redo_package(out: Path, package: str, fingerprint: str, deb: Path | None, min_seconds: float,
                 take: Callable[[Path, str, Path], dict]) -> dict:
    """Fetch (unless `deb` is given) and unpack `package`, let `take(root, version, staging)` write its files to
    staging and return what it kept, then move staging to audio/<package> and write the record, in that order."""
    final, staging = out / "audio" / package, out / "audio" / f".{package}.partial"
    # from here on the old record no longer describes the disk
    record_path(out, package).unlink(missing_ok=True)
    for folder in (final, staging):
        shutil.rmtree(folder, ignore_errors=True)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"{TMP_PREFIX}{package}-", dir=out) as tmp:
        tmp = Path(tmp)
        deb = deb or debtools.download(package, tmp)
        name, version = debtools.fields(deb)
        if name != package:
            raise SampleCNNError(f"holds package {name!r}, not {package!r}", deb)
        debtools.extract(deb, tmp / "root")
        record = take(tmp / "root", version, staging)
    os.replace(staging, final)
    record = {"package": package, "version": version, "fingerprint": fingerprint, "min_seconds": min_seconds,
              "seconds": round(time.monotonic() - start, 1), **record}
    with atomic_path(record_path(out, package), overwrite=True) as t:
        t.write_text(json.dumps(record, indent=1), encoding="utf-8")
    return record


def each_package(out: Path, names: list[str], versions: dict[str, str], fingerprint_of: Callable[[str], str],
                 build: Callable[[str, str, Callable[[str], None]], dict], describe: Callable[[list[dict]], str],
                 force: bool, progress: bool, log: Callable[[str], None]) -> tuple[dict[str, dict], list[str]]:
    """({package: record}, packages reused): each package's record reused where it is current (unless `force`),
    else made by `build(package, fingerprint, say)`; one progress bar and one line per package, `describe(kept)`
    saying what a newly built one yielded."""
    from tqdm import tqdm

    say = tqdm.write if progress else log
    done, skipped = {}, []
    bar = tqdm(names, unit="pkg", disable=not progress, position=0)
    for package in bar:
        bar.set_postfix_str(package)
        fingerprint = fingerprint_of(package)
        version = versions[package]
        record = None if force else current_record(out, package, fingerprint, version)
        if record is not None:
            skipped.append(package)
            say(f"{package} {version}: already extracted, skipped")
        else:
            record = build(package, fingerprint, say)
            say(f"{package} {record['version']}: {describe(record['kept'])} ({record['seconds']:.0f} s)")
        done[package] = record
    bar.close()
    return done, skipped
