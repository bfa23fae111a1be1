"""Licence of one file from a machine-readable debian/copyright (DEP-5, copyright-format 1.0).

Why our own small parser: only three things matter here (the `Files:` patterns, the `License:` short name and the
`Copyright:` holders, for attribution), and the rule that decides is simple but easy to get wrong: the *last*
paragraph whose pattern matches wins, and `*` matches any characters including `/`. A file that is not
machine-readable, or a path no paragraph covers, gives "unknown": a licence is never guessed.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["match", "Licence", "UNKNOWN", "Copyright", "read"]


@functools.lru_cache(maxsize=4096)
def _regex(pattern: str) -> re.Pattern:
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern) and pattern[i + 1] in "*?\\":
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "*" else "." if c == "?" else re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def match(pattern: str, path: str) -> bool:
    """debian/copyright glob: `*` any characters (`/` included), `?` one character, `\\*` `\\?` `\\\\` literal."""
    return _regex(pattern).fullmatch(path) is not None


@dataclass(frozen=True)
class Licence:
    name: str       # the License: short name(s) as written ("GPL-2+", "CC-BY-SA-3.0 or CC-BY-3.0"), or "unknown"
    files: str      # the Files: pattern that decided ("*" = the package-wide default), "" if unknown
    copyright: str  # its Copyright: holders on one line, for attribution


UNKNOWN = Licence("unknown", "", "")


def _paragraphs(text: str) -> list[dict[str, str]]:
    """deb822 paragraphs as {field (lower case): value}; continuation lines are kept, joined by newlines."""
    paragraphs, fields, key = [], {}, None
    for line in text.splitlines() + [""]:
        if not line.strip():
            if fields:
                paragraphs.append(fields)
            fields, key = {}, None
        elif line.startswith("#"):
            continue
        elif line[0] in " \t":
            if key is not None:
                fields[key] += "\n" + line.strip()
        elif ":" in line:
            key, value = line.split(":", 1)
            key = key.strip().lower()
            fields[key] = value.strip()
    return paragraphs


class Copyright:
    """The Files paragraphs of one debian/copyright, in file order."""

    def __init__(self, stanzas: list[tuple[tuple[str, ...], str, str]]):  # (patterns, licence name, holders)
        self.stanzas = stanzas

    @classmethod
    def parse(cls, text: str) -> "Copyright | None":
        """None when the file is not machine-readable (no Format: header)."""
        paragraphs = _paragraphs(text)
        if not paragraphs or "format" not in paragraphs[0]:
            return None
        stanzas = []
        for p in paragraphs:
            if "files" not in p:
                continue
            patterns = tuple(p["files"].split())
            name = p.get("license", "").split("\n", 1)[0].strip() or "unknown"
            holders = "; ".join(s for s in p.get("copyright", "").split("\n") if s and s != ".")
            stanzas.append((patterns, name, holders))
        return cls(stanzas)

    def licence_for(self, path: str) -> Licence:
        for patterns, name, holders in reversed(self.stanzas):
            for p in patterns:
                if match(p, path):
                    return Licence(name, p, holders)
        return UNKNOWN


def read(path: Path) -> Copyright | None:
    """The parsed file, or None when it is missing, a link into another package, or not machine-readable."""
    if path.is_symlink() or not path.is_file():
        return None
    return Copyright.parse(path.read_text(encoding="utf-8", errors="replace"))
