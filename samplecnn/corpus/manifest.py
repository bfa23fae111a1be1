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
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ..fileio import atomic_path
from .packages import split_of

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


@dataclass
class Summary:
    rows: list[dict]
    excluded: list[dict]
    versions: dict[str, str]
    skipped: list[str] = field(default_factory=list)  # packages reused from an earlier run

    def hours(self, package: str | None = None, split: str | None = None) -> float:
        return sum(r["duration"] for r in self.rows
                   if (package is None or r["package"] == package) and (split is None or r["split"] == split)) / 3600

    def lines(self, min_seconds: float) -> list[str]:
        by_pkg = defaultdict(list)
        for r in self.rows:
            by_pkg[r["package"]].append(r)
        out = [f"{'package':24s} {'version':20s} {'split':5s} {'tracks':>6s} {'hours':>6s}  licences (tracks)"]
        for pkg, version in self.versions.items():
            rows = by_pkg.get(pkg, [])
            lic = Counter(r["licence"] for r in rows)
            out.append(f"{pkg:24s} {version:20s} {split_of(pkg):5s} {len(rows):6d} {self.hours(pkg):6.2f}  "
                       + ", ".join(f"{k} ({n})" for k, n in lic.most_common()))
        total, valid = self.hours(), self.hours(split="valid")
        share = f" = {100 * valid / total:.0f}%" if total else ""
        out.append(f"{'total':24s} {'':20s} {'':5s} {len(self.rows):6d} {total:6.2f}  unique tracks >= "
                   f"{min_seconds:g} s (train {self.hours(split='train'):.2f} h, valid {valid:.2f} h{share})")
        lic_hours, lic_count = Counter(), Counter()
        for r in self.rows:
            lic_hours[r["licence"]] += r["duration"] / 3600
            lic_count[r["licence"]] += 1
        out.append("licences: " + ", ".join(f"{k} {h:.2f} h ({lic_count[k]})" for k, h in lic_hours.most_common()))
        reasons = Counter(e["reason"] for e in self.excluded)
        out.append("left out (excluded.csv): " + (", ".join(f"{n} {r}" for r, n in reasons.most_common()) or "none"))
        return out


def write(out: str | os.PathLike, records: list[dict]) -> Summary:
    """Resolve cross-package duplicates, add the split, write excluded.csv then manifest.csv under `out`."""
    out = Path(out)
    rows, excluded, seen = [], [], {}
    for rec in records:
        excluded.extend(rec["excluded"])
        for row in rec["kept"]:
            first = seen.get(row["content_hash"]) or seen.get(row["file_sha256"])
            if first:
                excluded.append({"package": row["package"], "version": row["version"],
                                 "original_path": row["original_path"], "reason": "duplicate", "detail": first})
                continue
            seen[row["content_hash"]] = seen[row["file_sha256"]] = row["path"]
            rows.append({**row, "split": split_of(row["package"])})
    write_csv(out / "excluded.csv", EXCLUDED_COLUMNS, excluded)
    write_csv(out / "manifest.csv", MANIFEST_COLUMNS, rows)
    return Summary(rows, excluded, {rec["package"]: rec["version"] for rec in records})
