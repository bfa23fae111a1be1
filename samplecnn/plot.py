"""Taggram pictures: tags over time as a heatmap, the song-level scores beside it."""

from __future__ import annotations

import os

import numpy as np

from .fileio import atomic_path
from .inference import TagResult


def save_taggram(result: TagResult, out: str | os.PathLike, max_tags: int = 50, overwrite: bool = False) -> None:
    """Write a PNG: rows are tags (sorted by song-level score, best on top), columns are segments in time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = np.argsort(-result.scores, kind="stable")[:max_tags]
    grid = result.taggram[:, order].T
    names = [result.tags[i] for i in order]
    start = float(result.segment_starts[0]) if len(result.segment_starts) else 0.0
    end = float(result.segment_starts[-1]) + result.segment_seconds if len(result.segment_starts) else 1.0

    height = 1.2 + 0.19 * len(names)
    fig, (ax, bar) = plt.subplots(1, 2, figsize=(11, height), sharey=True,
                                  gridspec_kw={"width_ratios": [5, 1], "wspace": 0.05})
    image = ax.imshow(grid, aspect="auto", interpolation="nearest", cmap="magma", vmin=0, vmax=1,
                      extent=(start, end, len(names) - 0.5, -0.5))
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("time (s)")
    title = os.path.basename(result.path) if result.path else "taggram"
    ax.set_title(f"{title} ({result.model})" if result.model else title, fontsize=10, loc="left")
    scores = result.scores[order]
    decided = scores >= result.thresholds[order]
    bar.barh(range(len(names)), scores, color=np.where(decided, "tab:orange", "tab:gray"))
    bar.set_xlim(0, 1)
    bar.set_xlabel("song score")
    bar.tick_params(axis="y", left=False)
    fig.colorbar(image, ax=bar, fraction=0.25, pad=0.08, label="segment probability")
    with atomic_path(out, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
