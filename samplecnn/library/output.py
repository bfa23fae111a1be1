"""Ranked results (search, similar) printed as a table, JSON, JSON lines or CSV; file names shown safely."""

from __future__ import annotations

import csv
import json
from typing import TextIO

from .search import Hit

FORMATS = ("table", "json", "jsonl", "csv")


def quote_path(path: str) -> str:
    """`path` as it is, or in Python's quoted form when printing it as is could mislead or fail.

    A file name may hold a newline (which would print as a second, forged line of a report), other control
    characters, or bytes that are not UTF-8 (lone surrogates, which a strict stream refuses). Those are shown as
    repr() shows them: one line, unambiguous, and lossless (`os.fsencode(ast.literal_eval(shown))` is the file's
    name in bytes). An ordinary name, the common case, stays readable and unquoted."""
    if path.isprintable() and not path.startswith(("'", '"')):
        return path
    return repr(path)


def write_hits(hits: list[Hit], fmt: str, out: TextIO, score_name: str = "score") -> None:
    rows = [{"rank": i, "path": h.path, score_name: round(h.score, 6),
             **{k: round(v, 6) for k, v in h.detail.items()}} for i, h in enumerate(hits, 1)]
    if fmt == "json":
        out.write(json.dumps(rows, indent=1) + "\n")
    elif fmt == "jsonl":
        for row in rows:
            out.write(json.dumps(row) + "\n")
    elif fmt == "csv":
        names = ["rank", "path", score_name] + (list(hits[0].detail) if hits else [])
        writer = csv.DictWriter(out, names, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    else:
        if not hits:
            out.write("(no tracks)\n")
        detail = list(hits[0].detail) if hits else []
        if detail:
            out.write(f"{'rank':>4s}  {score_name:>10s}  " + "  ".join(f"{d[:12]:>12s}" for d in detail) + "  path\n")
        for row, h in zip(rows, hits):
            cells = "".join(f"{v:12.3f}  " for v in h.detail.values())
            out.write(f"{row['rank']:4d}  {h.score:10.4f}  {cells}{quote_path(h.path)}\n")
