"""The corpus' two tables and its summary, made from the per-package records.

Duplicates across packages are resolved here, not while extracting, so that the answer never depends on which
packages a run happened to redo: the copy in the package that comes first in the recipe's order is kept (supertux-data
and supertuxkart-data ship the same beneath_the_rabbit_hole.ogg). The later copy stays on disk under audio/ but is
not in manifest.csv; excluded.csv lists it with every other file left out and the reason. manifest.csv is written
last, atomically: when it exists, everything it lists is in place.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path

from ..fileio import atomic_path
from .packages import split_of
from .summary import BuildSummary, Layout

__all__ = ["MANIFEST_COLUMNS", "EXCLUDED_COLUMNS", "Summary", "write"]

MANIFEST_COLUMNS = ["path", "package", "version", "original_path", "duration", "sample_rate", "channels", "codec",
                    "content_hash", "file_sha256", "licence", "licence_files", "copyright", "split"]
EXCLUDED_COLUMNS = ["package", "version", "original_path", "reason", "detail"]


def write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    """A corpus table (manifest.csv, excluded.csv), written atomically; durations with 3 decimals."""
    with atomic_path(path, overwrite=True) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            w = csv.DictWriter(f, columns, lineterminator="\n")
            w.writeheader()
            for row in rows:
                w.writerow({k: f"{v:.3f}" if k == "duration" else v for k, v in row.items()})


_LAYOUT = Layout(item="tracks", unit="h", unit_heading="hours", unit_seconds=3600, decimals=2, package_width=24,
                 version_width=20, split_of=split_of)


class Summary(BuildSummary):
    def hours(self, package: str | None = None, split: str | None = None) -> float:
        return self.seconds(package, split) / 3600

    def lines(self, min_seconds: float) -> list[str]:
        return self.layout_lines(_LAYOUT, f"unique tracks >= {min_seconds:g} s")


def first_copies(records: list[dict], excluded: list[dict]) -> Iterator[tuple[dict, dict]]:
    """(record, kept row) for every file whose audio and bytes no earlier row had, in the records' order; the later
    copies go to `excluded` as duplicates of the first, after each record's own exclusions."""
    seen: dict[str, str] = {}
    for rec in records:
        excluded.extend(rec["excluded"])
        for row in rec["kept"]:
            first = seen.get(row["content_hash"]) or seen.get(row["file_sha256"])
            if first:
                excluded.append({"package": row["package"], "version": row["version"],
                                 "original_path": row["original_path"], "reason": "duplicate", "detail": first})
                continue
            seen[row["content_hash"]] = seen[row["file_sha256"]] = row["path"]
            yield rec, row


def write(out: str | os.PathLike, records: list[dict]) -> Summary:
    """Resolve cross-package duplicates, add the split, write excluded.csv then manifest.csv under `out`."""
    out = Path(out)
    excluded: list[dict] = []
    rows = [{**row, "split": split_of(row["package"])} for _, row in first_copies(records, excluded)]
    write_csv(out / "excluded.csv", EXCLUDED_COLUMNS, excluded)
    write_csv(out / "manifest.csv", MANIFEST_COLUMNS, rows)
    return Summary(rows, excluded, {rec["package"]: rec["version"] for rec in records})
