"""Which General MIDI instrument plays each part of a training render, drawn so that every instrument the default
model is weak on (piano, guitars, violin, cello, harp, harpsichord, flute, sitar, strings, choir, drums) is heard
often, while the rest of the General MIDI set still turns up now and then.

A render either gives all its parts one instrument (a piano or guitar reduction, a string or choir section: how a
chorale or a folk tune is mostly heard) or draws one per part; a low part may get a bass instrument. Each instrument
has a comfortable range, and a part is moved by whole octaves into it (a soprano line on a cello sounds an octave
down), so that no render is a flute playing the bass line at pitch. Drum kits are the General MIDI kits (bank 128).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FAVOURED", "BASSES", "DRUM_KITS", "Choice", "choose", "octave_shift", "program_name", "comfortable_range"]

# (program, weight): the instruments training must hear often; weights sum to about 0.8 of a draw
FAVOURED: tuple[tuple[int, float], ...] = (
    (0, 10), (1, 3),                        # acoustic grand, bright piano
    (6, 6),                                 # harpsichord
    (24, 6), (25, 6), (26, 2), (27, 3),     # nylon, steel, jazz, clean electric guitar
    (29, 2), (30, 3),                       # overdriven, distortion guitar
    (40, 6), (41, 2), (42, 5),              # violin, viola, cello
    (46, 5),                                # harp
    (48, 5), (49, 3),                       # string ensembles
    (52, 5), (53, 2),                       # choir aahs, voice oohs
    (73, 5),                                # flute
    (104, 4),                               # sitar
)
BASSES: tuple[int, ...] = (32, 33, 34, 42, 43)   # acoustic, finger, pick bass; cello; contrabass
# standard, room, power, electronic, 808, jazz, brush, orchestra
DRUM_KITS: tuple[int, ...] = (0, 8, 16, 24, 25, 32, 40, 48)
_FAVOURED_SHARE = 0.8
_SAME_FOR_ALL = 0.45   # share of renders whose parts all get one instrument
_BASS_SHARE = 0.35     # share of multi-part renders whose lowest part gets a bass instrument

_NAMES = None


def program_name(program: int) -> str:
    """General MIDI name (pretty_midi's table), e.g. 0 -> 'Acoustic Grand Piano'."""
    global _NAMES
    if _NAMES is None:
        import pretty_midi
        _NAMES = [pretty_midi.program_to_instrument_name(p) for p in range(128)]
    return _NAMES[program]


def comfortable_range(program: int) -> tuple[int, int]:
    """(lowest, highest) MIDI note in which a part's median should lie for this instrument."""
    special = {40: (60, 84), 41: (53, 76), 42: (40, 64), 43: (31, 52), 73: (64, 88), 104: (50, 74), 46: (43, 84),
               52: (50, 74), 53: (50, 74), 24: (45, 72), 25: (45, 72), 6: (45, 84)}
    if program in special:
        return special[program]
    if 32 <= program <= 39:
        return (31, 52)
    if 56 <= program <= 79:          # brass, reeds, pipes
        return (55, 82)
    return (40, 84)


def octave_shift(median_pitch: float, program: int) -> int:
    """Semitones (a multiple of 12) that bring `median_pitch` into the program's comfortable range."""
    low, high = comfortable_range(program)
    shift = 0
    while median_pitch + shift < low:
        shift += 12
    while median_pitch + shift > high and median_pitch + shift - 12 >= low - 6:
        shift -= 12
    return shift


@dataclass(frozen=True)
class Choice:
    programs: tuple[int, ...]   # one per part, in the order of the parts
    same_for_all: bool


def _draw(rng: np.random.Generator) -> int:
    if rng.random() < _FAVOURED_SHARE:
        progs = np.array([p for p, _ in FAVOURED])
        w = np.array([w for _, w in FAVOURED], dtype=float)
        return int(rng.choice(progs, p=w / w.sum()))
    return int(rng.integers(0, 112))   # 112-127: ethnic percussion and sound effects, never melodic enough


def choose(rng: np.random.Generator, n_parts: int, lowest: int | None = None) -> Choice:
    """Programs for `n_parts` parts; `lowest` is the index of the lowest-sounding part (for a bass instrument)."""
    if n_parts <= 0:
        return Choice((), False)
    if n_parts == 1 or rng.random() < _SAME_FOR_ALL:
        p = _draw(rng)
        return Choice((p,) * n_parts, n_parts > 1)
    progs = [_draw(rng) for _ in range(n_parts)]
    if lowest is not None and rng.random() < _BASS_SHARE:
        progs[lowest] = int(rng.choice(BASSES))
    return Choice(tuple(progs), False)
