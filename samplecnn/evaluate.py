"""Song-level evaluation of a checkpoint on a prepared dataset split: macro ROC-AUC / PR-AUC, per-tag table, plot."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

from . import inference, metrics
from .data import Cache
from .errors import SampleCNNError
from .fileio import atomic_path


def evaluate(model: str | os.PathLike, data: str | os.PathLike, split: str = "test",
             out: str | os.PathLike | None = None, batch_size: int | None = None, device: str | None = None) -> dict:
    """Score every clip of `split` (mean over its non-overlapping segments, as in the papers) and summarise."""
    tagger = inference.load(model, device=device, batch_size=batch_size)
    cache = Cache(data)
    if list(cache.tags) != tagger.tags:
        raise SampleCNNError(f"the model's {len(tagger.tags)} tags differ from the dataset's {len(cache.tags)} "
                             f"(or their order)", model)
    if cache.sample_rate != tagger.sample_rate:
        raise SampleCNNError(f"the dataset is at {cache.sample_rate} Hz, the model wants {tagger.sample_rate} Hz", data)
    clips = cache.indices(split)
    if len(clips) == 0:
        raise SampleCNNError(f"the dataset has no clips in the {split!r} split", data)
    scores = clip_scores(tagger, cache, clips, f"evaluating {split}")
    result = metrics.summary(cache.labels[clips], scores, list(cache.tags))
    result.update(model=os.fspath(model), data=os.fspath(data), split=split)
    if out is not None:
        write_report(result, Path(out))
    return result


def clip_scores(tagger: inference.Tagger, cache: Cache, clips: np.ndarray, desc: str = "scoring") -> np.ndarray:
    """(clips, tags) song-level scores of whole cached clips: the mean over each clip's segments, as `tag` gives."""
    from tqdm import tqdm

    return np.stack([inference.song_scores(tagger.taggram(cache.clip_float(int(i))))
                     for i in tqdm(clips, desc=desc, unit="clip", dynamic_ncols=True)])


def write_report(result: dict, out: Path) -> None:
    """summary.json, per_tag.csv and per_tag.png in `out` (replacing an earlier report there)."""
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "summary.json", overwrite=True) as tmp:
        tmp.write_text(json.dumps(result, indent=1))
    with atomic_path(out / "per_tag.csv", overwrite=True) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["tag", "positives", "roc_auc", "pr_auc"])
        writer.writeheader()
        writer.writerows(result["per_tag"])
    _plot_per_tag(result, out / "per_tag.png")


def _plot_per_tag(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted((r for r in result["per_tag"] if r["roc_auc"] is not None), key=lambda r: r["roc_auc"])
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.2 * len(rows)))
    y = np.arange(len(rows))
    ax.barh(y - 0.2, [r["roc_auc"] for r in rows], height=0.4, label="ROC-AUC")
    ax.barh(y + 0.2, [r["pr_auc"] for r in rows], height=0.4, label="PR-AUC")
    ax.set_yticks(y, [f"{r['tag']} ({r['positives']})" for r in rows], fontsize=8)
    ax.set_xlim(0, 1)
    ax.axvline(result["roc_auc"], color="tab:blue", linestyle=":")
    ax.axvline(result["pr_auc"], color="tab:orange", linestyle=":")
    ax.set_title(f"{result['split']}: macro ROC-AUC {result['roc_auc']:.4f}, PR-AUC {result['pr_auc']:.4f} "
                 f"({result['clips']} clips; positives in brackets)", fontsize=9)
    ax.legend(loc="lower right")
    fig.tight_layout()
    with atomic_path(path, overwrite=True) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
