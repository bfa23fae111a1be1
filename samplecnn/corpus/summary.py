"""The summary a corpus build prints: a line per package, the total and its split, the licences, what was left out.

The music corpus (manifest.py) counts tracks in hours, the voice corpus (voice_tables.py) clips in minutes with a
column per gender; each gives its wording as a Layout, and the lines are made here, one way for both.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Layout", "BuildSummary"]


@dataclass(frozen=True)
class Layout:
    """How one corpus words and sizes its summary."""

    item: str                        # what a row is: "tracks", "clips"
    unit: str                        # the duration's unit after a number: "h", "min"
    unit_heading: str                # the duration column's heading: "hours", "min"
    unit_seconds: int                # seconds in that unit
    decimals: int                    # digits after the point of a duration
    package_width: int
    version_width: int
    split_of: Callable[[str], str]   # package -> "train" or "valid"
    extra_heading: str = ""          # a column between the duration and the licences (with its trailing spaces)
    extra: Callable[[list[dict]], str] = lambda rows: ""  # a package's rows -> that column


@dataclass
class BuildSummary:
    """The rows of manifest.csv and excluded.csv, the version of each package, and the packages reused."""

    rows: list[dict]
    excluded: list[dict]
    versions: dict[str, str]
    skipped: list[str] = field(default_factory=list)  # packages reused from an earlier run

    def seconds(self, package: str | None = None, split: str | None = None) -> float:
        return sum(r["duration"] for r in self.rows
                   if (package is None or r["package"] == package) and (split is None or r["split"] == split))

    def layout_lines(self, layout: Layout, kept: str) -> list[str]:
        """The printed summary; `kept` says what the total counts ("unique tracks >= 30 s")."""
        by_pkg = defaultdict(list)
        for r in self.rows:
            by_pkg[r["package"]].append(r)
        pw, vw, d, unit = layout.package_width, layout.version_width, layout.decimals, layout.unit
        out = [f"{'package':{pw}s} {'version':{vw}s} {'split':5s} {layout.item:>6s} {layout.unit_heading:>6s}  "
               f"{layout.extra_heading}licences ({layout.item})"]
        for pkg, version in self.versions.items():
            rows = by_pkg.get(pkg, [])
            lic = Counter(r["licence"] for r in rows)
            amount = self.seconds(pkg) / layout.unit_seconds
            out.append(f"{pkg:{pw}s} {version:{vw}s} {layout.split_of(pkg):5s} {len(rows):6d} {amount:6.{d}f}  "
                       + layout.extra(rows) + ", ".join(f"{k} ({n})" for k, n in lic.most_common()))
        total, valid = self.seconds() / layout.unit_seconds, self.seconds(split="valid") / layout.unit_seconds
        train = self.seconds(split="train") / layout.unit_seconds
        share = f" = {100 * valid / total:.0f}%" if total else ""
        out.append(f"{'total':{pw}s} {'':{vw}s} {'':5s} {len(self.rows):6d} {total:6.{d}f}  {kept} "
                   f"(train {train:.{d}f} {unit}, valid {valid:.{d}f} {unit}{share})")
        lic_amount, lic_count = Counter(), Counter()
        for r in self.rows:
            lic_amount[r["licence"]] += r["duration"] / layout.unit_seconds
            lic_count[r["licence"]] += 1
        out.append("licences: " + ", ".join(f"{k} {a:.{d}f} {unit} ({lic_count[k]})"
                                            for k, a in lic_amount.most_common()))
        reasons = Counter(e["reason"] for e in self.excluded)
        out.append("left out (excluded.csv): " + (", ".join(f"{n} {r}" for r, n in reasons.most_common()) or "none"))
        return out
