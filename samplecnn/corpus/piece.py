"""A piece of symbolic music as the renderer needs it: parts of timed notes (seconds) and the beat grid.

Both sources (music21's corpus, MIDI files) become this one form, so the arranging (programs, drums, the length
cap) and the rendering never depend on where a piece came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Part", "Piece"]


@dataclass
class Part:
    name: str
    notes: list[tuple[float, float, int, int]]   # (start s, end s, MIDI pitch, velocity 1-127)
    is_drum: bool = False
    program: int | None = None                    # as written in a MIDI file (information only)

    def median_pitch(self) -> float:
        return float(np.median([n[2] for n in self.notes])) if self.notes else 60.0


@dataclass
class Piece:
    parts: list[Part]
    beats: np.ndarray = field(default_factory=lambda: np.zeros(0))   # beat times in seconds
    beats_per_bar: int = 4

    @property
    def end(self) -> float:
        return max((n[1] for p in self.parts for n in p.notes), default=0.0)

    def cut(self, seconds: float) -> "Piece":
        """The first `seconds`: notes starting later are dropped, notes sounding at the cut end there."""
        parts = [Part(p.name, [(s, min(e, seconds), k, v) for s, e, k, v in p.notes if s < seconds],
                      p.is_drum, p.program) for p in self.parts]
        return Piece([p for p in parts if p.notes], self.beats[self.beats < seconds], self.beats_per_bar)
