"""What a corpus built from Debian packages remembers per package, so that a rerun skips finished work.

`packages/<package>.json` records what a package yielded, with a fingerprint of the recipe that produced it and the
package's version; a package is redone when either changed, when its audio folder is gone, or when asked to.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

__all__ = ["TMP_PREFIX", "record_path", "load_record", "current_record", "clear_stale"]

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
