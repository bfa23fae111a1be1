"""Song-level tagging metrics (macro ROC-AUC and PR-AUC, as in the MTAT papers) and per-tag thresholds.

scikit-learn computes the curves: `roc_auc_score` and `average_precision_score` (PR-AUC as average precision, the
convention of Won et al. 2020). Soft labels (distillation targets) count as positive at >= 0.5.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score


def binarize(labels: np.ndarray) -> np.ndarray:
    return (np.asarray(labels) >= 0.5).astype(np.int64)


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
    return {
        "roc_auc": float(np.mean([r["roc_auc"] for r in scored])) if scored else float("nan"),
        "pr_auc": float(np.mean([r["pr_auc"] for r in scored])) if scored else float("nan"),
        "tags_scored": len(scored),
        "clips": int(len(labels)),
        "per_tag": rows,
    }


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
