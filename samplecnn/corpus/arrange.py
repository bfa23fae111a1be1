"""From a Piece to what FluidSynth plays: a program per part, a drum kit, maybe an added drum part, gains; or, for
a solo render, one of those parts alone (a drum kit, or one instrument).

Every draw comes from one generator seeded by (--seed, the render's id), so a render is the same whichever run,
order or machine makes it, and two variants of one work sound different.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import drums, programs
from .piece import Part, Piece
from .render import Voice

__all__ = ["DRUM_SHARE", "SOLO_DRUM_SHARE", "Arrangement", "arrange", "solo", "describe"]

DRUM_SHARE = 0.3        # share of drumless pieces that get a drum part
SOLO_DRUM_SHARE = 0.35  # share of solo renders that are the drum kit alone


@dataclass(frozen=True)
class Arrangement:
    piece: Piece            # with the added drum part, if any
    voices: list[Voice]     # one per part of `piece`
    drums: str              # "added", "original" or ""


def arrange(piece: Piece, rng: np.random.Generator, drum_share: float = DRUM_SHARE) -> Arrangement:
    melodic = [i for i, p in enumerate(piece.parts) if not p.is_drum]
    medians = [piece.parts[i].median_pitch() for i in melodic]
    lowest = int(np.argmin(medians)) if len(melodic) > 1 else None
    choice = programs.choose(rng, len(melodic), lowest)
    kit = int(rng.choice(programs.DRUM_KITS))
    voices: dict[int, Voice] = {}
    for j, i in enumerate(melodic):
        prog = choice.programs[j]
        voices[i] = Voice(prog, False, programs.octave_shift(medians[j], prog), float(rng.uniform(0.6, 1.0)))
    parts = list(piece.parts)
    has_drums = len(melodic) < len(parts)
    for i, p in enumerate(parts):
        if p.is_drum:
            voices[i] = Voice(kit, True, 0, float(rng.uniform(0.5, 0.9)))
    added = False
    if not has_drums and len(piece.beats) >= 4 and rng.random() < drum_share:
        hits = drums.pattern(rng, piece.beats, piece.beats_per_bar, piece.end)
        if hits:
            parts.append(Part("drums", hits, is_drum=True))
            voices[len(parts) - 1] = Voice(kit, True, 0, float(rng.uniform(0.4, 0.8)))
            added = True
    out = Piece(parts, piece.beats, piece.beats_per_bar)
    return Arrangement(out, [voices[i] for i in range(len(parts))],
                       "added" if added else "original" if has_drums else "")


def solo(piece: Piece, rng: np.random.Generator, drum_share: float = SOLO_DRUM_SHARE) -> Arrangement:
    """One part of the piece's arrangement alone: the drums (the piece's own, else a part played on its beat grid)
    in `drum_share` of the draws, else one melodic part. The evaluation sets and many users' files are exposed
    instruments (a drum break, a guitar chord), which ensemble renders and game music seldom are."""
    want_drums = rng.random() < drum_share
    full = arrange(piece, rng, drum_share=1.0 if want_drums else 0.0)
    parts = full.piece.parts
    drum = [i for i, p in enumerate(parts) if p.is_drum]
    melodic = [i for i, p in enumerate(parts) if not p.is_drum and p.notes]
    if want_drums and drum:
        keep = drum
    elif melodic:
        keep = [melodic[int(rng.integers(0, len(melodic)))]]
    else:
        keep = drum
    return Arrangement(Piece([parts[i] for i in keep], piece.beats, piece.beats_per_bar),
                       [full.voices[i] for i in keep], "solo" if keep == drum and drum else "")


def describe(voices: list[Voice]) -> tuple[str, str]:
    """(programs, instruments) for the manifest: `0;40;drums:25` and the distinct General MIDI names in order."""
    progs = ";".join(f"drums:{v.program}" if v.is_drum else str(v.program) for v in voices)
    names: list[str] = []
    for v in voices:
        name = f"Drums (kit {v.program})" if v.is_drum else programs.program_name(v.program)
        if name not in names:
            names.append(name)
    return progs, ";".join(names)
