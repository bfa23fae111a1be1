"""A General MIDI drum part for a piece that has none, played on the piece's own beat grid.

Training renders get one now and then so that the student hears drums under piano, guitars and strings as well as
in the game music; the pattern follows the piece's beats and bar lines (a kick on the downbeat, a backbeat snare,
eighth-note hats or a ride), which is how a drummer would accompany a tune, not a loop pasted over it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["KICK", "SNARE", "HAT", "pattern"]

KICK, SNARE, SIDESTICK, HAT, OPEN_HAT, RIDE, CRASH, TOM = 36, 38, 37, 42, 46, 51, 49, 45


def pattern(rng: np.random.Generator, beats: np.ndarray, beats_per_bar: int,
            end: float) -> list[tuple[float, float, int, int]]:
    """(start, end, pitch, velocity) drum hits over `beats` (seconds, increasing) up to `end` seconds."""
    beats = np.asarray(beats, dtype=float)
    beats = beats[beats < end]
    if len(beats) < 2:
        return []
    style = int(rng.integers(0, 4))   # 0 rock, 1 ride/jazz, 2 half-time, 3 four-on-the-floor
    cymbal = RIDE if style == 1 else HAT
    backbeat = SIDESTICK if style == 1 and rng.random() < 0.5 else SNARE
    bar = max(1, int(beats_per_bar))
    hits = []
    base = float(rng.uniform(75, 110))

    def hit(t: float, pitch: int, accent: float = 1.0) -> None:
        v = int(np.clip(base * accent + rng.normal(0, 6), 20, 127))
        hits.append((float(t), float(t) + 0.1, pitch, v))

    for i, t in enumerate(beats):
        pos = i % bar
        step = (beats[i + 1] - t) if i + 1 < len(beats) else (t - beats[i - 1])
        hit(t, cymbal, 0.8)
        if style != 3 or rng.random() < 0.9:
            hit(t + step / 2, cymbal, 0.6)
        if style == 3:
            hit(t, KICK, 1.0)
            if pos % 2 == 1:
                hit(t, backbeat, 0.95)
        elif style == 2:
            if pos == 0:
                hit(t, KICK, 1.0)
            if bar >= 3 and pos == bar // 2 + (bar % 2):
                hit(t, backbeat, 0.95)
        else:
            if pos == 0 or (bar == 4 and pos == 2):
                hit(t, KICK, 1.0)
            if bar > 1 and pos % 2 == 1:
                hit(t, backbeat, 0.95)
        if pos == 0 and i % (bar * 8) == 0:
            hit(t, CRASH, 0.9)
        if pos == bar - 1 and i % (bar * 4) == bar * 4 - 1 and rng.random() < 0.5:
            hit(t + step / 2, TOM, 0.9)
    return sorted(hits)
