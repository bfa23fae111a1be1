"""Choosing a tag vocabulary: the N most frequent tags, in a deterministic and documented order.

Rules (the same for MTAT and for any folder dataset):
- a tag's frequency is the sum of its label column over the whole annotation table, before any clip is dropped
  (for 0/1 labels: the number of clips with the tag; for soft labels: the expected number);
- ranking is by frequency, descending; ties are broken by the tag name in Unicode code-point order (plain Python
  string order), so the result depends neither on the table's column order nor on the platform's locale;
- the chosen set is then ordered by that same ranking, except that a set equal to MTAT_TOP50 takes MTAT_TOP50's own
  order, so that a model trained on it has the tag order of musicnn and of the published checkpoints.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ..errors import SampleCNNError
from ..tags import MTAT_TOP50

__all__ = ["counts", "ranked", "choose", "standard_order"]


def counts(labels: np.ndarray, tags: Sequence[str]) -> dict[str, float]:
    """Frequency of each tag: its label column summed over all rows (float64, so soft labels keep their sums)."""
    sums = np.asarray(labels, dtype=np.float64).sum(axis=0) if len(labels) else np.zeros(len(tags))
    return {t: float(s) for t, s in zip(tags, sums)}


def ranked(freq: Mapping[str, float]) -> list[str]:
    """All tags, most frequent first; equal frequencies in name order."""
    return sorted(freq, key=lambda t: (-freq[t], t))


def standard_order(selected: Sequence[str]) -> list[str]:
    """MTAT_TOP50's order when `selected` is exactly that set, else `selected` unchanged."""
    if len(selected) == len(MTAT_TOP50) and set(selected) == set(MTAT_TOP50):
        return list(MTAT_TOP50)
    return list(selected)


def choose(freq: Mapping[str, float], top: int | None = None, tags: Sequence[str] | None = None) -> list[str]:
    """The vocabulary: `tags` exactly as given (each must occur in the table), else the `top` most frequent
    (all tags when None), ordered as the module docstring says."""
    if tags is not None:
        missing = [t for t in tags if t not in freq]
        if missing:
            raise SampleCNNError(f"--tags names tags the label table does not have: {', '.join(missing)}")
        if len(set(tags)) != len(tags) or not tags:
            raise SampleCNNError("--tags must be a list of distinct tags")
        return list(tags)
    order = ranked(freq)
    if top is not None:
        if top <= 0:
            raise SampleCNNError(f"--top must be positive, got {top}")
        if top > len(order):
            raise SampleCNNError(f"--top {top} asks for more tags than the label table has ({len(order)})")
        order = order[:top]
    return standard_order(order)
