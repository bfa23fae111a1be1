"""Song-level tagging metrics (macro ROC-AUC and PR-AUC, as in the MTAT papers) and per-tag thresholds.

scikit-learn computes the curves: `roc_auc_score` and `average_precision_score` (PR-AUC as average precision, the
convention of Won et al. 2020). Binary labels are used as they are. Soft labels (a teacher's scores, for
distillation) are turned into positives the way the default-model issue defines agreement with the teacher: a tag
is positive for a song when it is among the song's top decile of tags (the top 5 of 50) and scores >= 0.2.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

SOFT_MIN_SCORE = 0.2


def binarize(labels: np.ndarray) -> np.ndarray:
    """0/1 labels as they are; soft labels: top decile of each row's tags and >= SOFT_MIN_SCORE."""
    labels = np.asarray(labels, dtype=np.float64)
    if np.isin(labels, (0.0, 1.0)).all():
        return labels.astype(np.int64)
    top = max(1, int(np.ceil(labels.shape[1] / 10)))
    rank = np.argsort(np.argsort(-labels, axis=1, kind="stable"), axis=1, kind="stable")
    return ((rank < top) & (labels >= SOFT_MIN_SCORE)).astype(np.int64)


def per_tag(labels: np.ndarray, scores: np.ndarray, tags: list[str]) -> list[dict]:
    """One row per tag: positives, ROC-AUC and PR-AUC (None where a tag has no positive or no negative clip)."""
    y = binarize(labels)
    rows = []
    for j, tag in enumerate(tags):
        positives = int(y[:, j].sum())
        defined = 0 < positives < len(y)
        rows.append({
            "tag": tag,
            "positives": positives,
            "roc_auc": float(roc_auc_score(y[:, j], scores[:, j])) if defined else None,
            "pr_auc": float(average_precision_score(y[:, j], scores[:, j])) if defined else None,
        })
    return rows


def summary(labels: np.ndarray, scores: np.ndarray, tags: list[str]) -> dict:
    """Macro ROC-AUC / PR-AUC over the tags where they are defined, plus the per-tag rows."""
    rows = per_tag(labels, scores, tags)
    scored = [r for r in rows if r["roc_auc"] is not None]
    result = {
        "roc_auc": float(np.mean([r["roc_auc"] for r in scored])) if scored else float("nan"),
        "pr_auc": float(np.mean([r["pr_auc"] for r in scored])) if scored else float("nan"),
        "tags_scored": len(scored),
        "clips": int(len(labels)),
    }
    if not np.isin(labels, (0.0, 1.0)).all():  # soft labels (a teacher's): how well the tag ranking per song agrees
        result["spearman"] = mean_spearman(labels, scores)
    result["per_tag"] = rows
    return result


def mean_spearman(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mean over songs of the Spearman correlation between a song's label scores and its predicted scores."""
    from scipy.stats import spearmanr

    rhos = [spearmanr(a, b).statistic for a, b in zip(labels, scores)]
    return float(np.nanmean(rhos)) if rhos else float("nan")


def f1_thresholds(labels: np.ndarray, scores: np.ndarray, default: float = 0.5) -> np.ndarray:
    """Per-tag decision thresholds that maximise F1 on (validation) songs; `default` where a tag has no positive."""
    y = binarize(labels)
    thresholds = np.full(y.shape[1], default, dtype=np.float64)
    for j in range(y.shape[1]):
        if y[:, j].sum() == 0:
            continue
        precision, recall, cuts = precision_recall_curve(y[:, j], scores[:, j])
        f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
        thresholds[j] = float(cuts[int(np.argmax(f1))])
    return thresholds
