"""The voice corpus' two tables and its summary, made from the per-package records.

As in the music corpus (manifest.py), duplicates across packages, the labels (language, gender, speaker, kind) and
the split are settled here, when the tables are written, so that the answer never depends on which packages a run
happened to redo: of two packages with the same clip, the one first in voice_sources.SOURCES keeps it. The later
copy stays on disk but is not in manifest.csv; excluded.csv names it with every other file left out and the reason.
manifest.csv is written last, atomically: when it exists, every clip it lists is in place.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .manifest import write_csv
from .voice_sources import SOURCES, labels, split_of

__all__ = ["MANIFEST_COLUMNS", "EXCLUDED_COLUMNS", "Summary", "write"]

MANIFEST_COLUMNS = ["path", "package", "version", "original_path", "duration", "source_rate", "source_channels",
                    "codec", "content_hash", "file_sha256", "licence", "licence_files", "copyright", "lang",
                    "gender", "speaker", "kind", "split"]
EXCLUDED_COLUMNS = ["package", "version", "original_path", "reason", "detail"]


@dataclass
class Summary:
    rows: list[dict]
    excluded: list[dict]
    versions: dict[str, str]
    skipped: list[str] = field(default_factory=list)  # packages reused from an earlier run

    def minutes(self, package: str | None = None, split: str | None = None) -> float:
        return sum(r["duration"] for r in self.rows
                   if (package is None or r["package"] == package) and (split is None or r["split"] == split)) / 60

    def lines(self) -> list[str]:
        by_pkg = defaultdict(list)
        for r in self.rows:
            by_pkg[r["package"]].append(r)
        head = f"{'package':30s} {'version':16s} {'split':5s} {'clips':>6s} {'min':>6s}  "
        out = [head + "female/male/unknown min  licences (clips)"]
        for pkg, version in self.versions.items():
            rows = by_pkg.get(pkg, [])
            g = Counter()
            for r in rows:
                g[r["gender"]] += r["duration"] / 60
            lic = Counter(r["licence"] for r in rows)
            out.append(f"{pkg:30s} {version:16s} {split_of(pkg):5s} {len(rows):6d} {self.minutes(pkg):6.1f}  "
                       f"{g['female']:5.1f}/{g['male']:5.1f}/{g['unknown']:5.1f}  "
                       + ", ".join(f"{k} ({n})" for k, n in lic.most_common()))
        total, valid = self.minutes(), self.minutes(split="valid")
        share = f" = {100 * valid / total:.0f}%" if total else ""
        out.append(f"{'total':30s} {'':16s} {'':5s} {len(self.rows):6d} {total:6.1f}  unique clips "
                   f"(train {self.minutes(split='train'):.1f} min, valid {valid:.1f} min{share})")
        lic_min, lic_count = Counter(), Counter()
        for r in self.rows:
            lic_min[r["licence"]] += r["duration"] / 60
            lic_count[r["licence"]] += 1
        out.append("licences: " + ", ".join(f"{k} {m:.1f} min ({lic_count[k]})" for k, m in lic_min.most_common()))
        reasons = Counter(e["reason"] for e in self.excluded)
        out.append("left out (excluded.csv): " + (", ".join(f"{n} {r}" for r, n in reasons.most_common()) or "none"))
        return out


def write(out: str | os.PathLike, records: list[dict]) -> Summary:
    """Resolve cross-package duplicates, add labels and the split, write excluded.csv then manifest.csv."""
    out = Path(out)
    order = {name: i for i, name in enumerate(SOURCES)}
    records = sorted(records, key=lambda rec: order.get(rec["package"], len(order)))
    rows, excluded, seen = [], [], {}
    for rec in records:
        excluded.extend(rec["excluded"])
        kind = SOURCES[rec["package"]].kind
        for row in rec["kept"]:
            first = seen.get(row["content_hash"]) or seen.get(row["file_sha256"])
            if first:
                excluded.append({"package": row["package"], "version": row["version"],
                                 "original_path": row["original_path"], "reason": "duplicate", "detail": first})
                continue
            seen[row["content_hash"]] = seen[row["file_sha256"]] = row["path"]
            lab = labels(row["package"], row["original_path"])
            rows.append({**row, "lang": lab.lang, "gender": lab.gender, "speaker": lab.speaker, "kind": kind,
                         "split": split_of(row["package"])})
    write_csv(out / "excluded.csv", EXCLUDED_COLUMNS, excluded)
    write_csv(out / "manifest.csv", MANIFEST_COLUMNS, rows)
    return Summary(rows, excluded, {rec["package"]: rec["version"] for rec in records})
