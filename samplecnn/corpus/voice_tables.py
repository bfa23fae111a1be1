"""The voice corpus' two tables and its summary, made from the per-package records.

As in the music corpus (manifest.py), duplicates across packages, the labels (language, gender, speaker, kind) and
the split are settled here, when the tables are written, so that the answer never depends on which packages a run
happened to redo: of two packages with the same clip, the one first in voice_sources.SOURCES keeps it. The later
copy stays on disk but is not in manifest.csv; excluded.csv names it with every other file left out and the reason.
manifest.csv is written last, atomically: when it exists, every clip it lists is in place.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from .manifest import first_copies, write_csv
from .summary import BuildSummary, Layout
from .voice_sources import SOURCES, labels, split_of

__all__ = ["MANIFEST_COLUMNS", "EXCLUDED_COLUMNS", "Summary", "write"]

MANIFEST_COLUMNS = ["path", "package", "version", "original_path", "duration", "source_rate", "source_channels",
                    "codec", "content_hash", "file_sha256", "licence", "licence_files", "copyright", "lang",
                    "gender", "speaker", "kind", "split"]
EXCLUDED_COLUMNS = ["package", "version", "original_path", "reason", "detail"]


def _minutes_by_gender(rows: list[dict]) -> str:
    g = Counter()
    for r in rows:
        g[r["gender"]] += r["duration"] / 60
    return f"{g['female']:5.1f}/{g['male']:5.1f}/{g['unknown']:5.1f}  "


_LAYOUT = Layout(item="clips", unit="min", unit_heading="min", unit_seconds=60, decimals=1, package_width=30,
                 version_width=16, split_of=split_of, extra_heading="female/male/unknown min  ",
                 extra=_minutes_by_gender)


class Summary(BuildSummary):
    def minutes(self, package: str | None = None, split: str | None = None) -> float:
        return self.seconds(package, split) / 60

    def lines(self) -> list[str]:
        return self.layout_lines(_LAYOUT, "unique clips")


def write(out: str | os.PathLike, records: list[dict]) -> Summary:
    """Resolve cross-package duplicates, add labels and the split, write excluded.csv then manifest.csv."""
    out = Path(out)
    order = {name: i for i, name in enumerate(SOURCES)}
    records = sorted(records, key=lambda rec: order.get(rec["package"], len(order)))
    rows, excluded = [], []
    for rec, row in first_copies(records, excluded):
        lab = labels(row["package"], row["original_path"])
        rows.append({**row, "lang": lab.lang, "gender": lab.gender, "speaker": lab.speaker,
                     "kind": SOURCES[rec["package"]].kind, "split": split_of(row["package"])})
    write_csv(out / "excluded.csv", EXCLUDED_COLUMNS, excluded)
    write_csv(out / "manifest.csv", MANIFEST_COLUMNS, rows)
    return Summary(rows, excluded, {rec["package"]: rec["version"] for rec in records})
