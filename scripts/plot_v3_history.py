"""Plot the v3 long run's learning curve from the records every machine committed (checkpoints/v3/history.jsonl).

    .venv/bin/python scripts/plot_v3_history.py [--history checkpoints/v3/history.jsonl] [--out docs/v3-long-run.png]

One line per metric over training compute, the runs laid end to end in the order they ran, each phase shaded and
named by its optimiser, rate and labels. Only runs validated against the teacher's labels of the scored segments
(`valid_reference: "segments"`) are drawn; earlier records used another reference and do not compare. The first
phase starts after the 20-minute ablation run the long run continued from. v2's scores on the same validation are
the dashed lines.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ABLATION_MINUTES = 20.0  # the ablation run (v3-game-plain) the long run continued from
V2 = {"valid_roc_auc": 0.889, "valid_pr_auc": 0.710, "valid_spearman": 0.816}  # v2 on the same 12-segment validation
METRICS = {"valid_roc_auc": "ROC-AUC", "valid_pr_auc": "PR-AUC", "valid_spearman": "Spearman"}


def runs_in_order(path: Path) -> list[list[dict]]:
    """The records grouped by run, runs in the order they started, those on the segment reference only."""
    runs: dict[str, list[dict]] = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        runs.setdefault(str(record.get("run")), []).append(record)
    ordered = sorted(runs.values(), key=lambda rs: rs[0]["time"])
    return [rs for rs in ordered if all(r.get("valid_reference") == "segments" for r in rs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--history", default="checkpoints/v3/history.jsonl", type=Path)
    parser.add_argument("--out", default="docs/v3-long-run.png", type=Path)
    parser.add_argument("--names", default="SGD 0.002, teacher in the step;SGD 0.0004, labels ahead;"
                        "Adam 1e-4, labels ahead;Adam 3e-5, labels ahead;AdamW cosine 3e-5;+ solo renders, 1e-5",
                        help="';'-separated phase names, one per run in order (a run beyond them: its rate)")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = runs_in_order(args.history)
    names = args.names.split(";")
    fig, ax = plt.subplots(figsize=(10, 5))
    xs: list[float] = []
    offset = ABLATION_MINUTES
    for i, records in enumerate(runs):
        end = offset + records[-1]["compute_minutes"]
        name = names[i] if i < len(names) else f"lr {records[0]['lr']:g}"
        ax.axvspan(offset, end, color=f"C{i % 10}", alpha=0.08)
        # names staggered in height, so that those of narrow phases do not run into each other
        ax.text((offset + end) / 2, 0.995 - 0.04 * (i % 2), name, ha="center", va="top", fontsize=8,
                transform=ax.get_xaxis_transform(), wrap=True)
        xs += [offset + r["compute_minutes"] for r in records]
        offset = end
    records = [r for rs in runs for r in rs]
    for j, (key, label) in enumerate(METRICS.items()):
        ax.plot(xs, [r[key] for r in records], marker=".", color=f"C{j}", label=label)
        ax.axhline(V2[key], color=f"C{j}", linestyle="--", linewidth=0.8)
    ax.set_xlabel("training compute after v2 (minutes on 2 CPU threads; the ablation run's 20 first)")
    ax.set_ylabel("validation on 42 held-out tracks (12 segments each)")
    ax.set_title("samplecnn default v3: distillation from musicnn (dashed: v2)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    tmp = args.out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(args.out)
    print(f"{len(records)} validations over {len(runs)} runs ({offset:.1f} compute min) -> {args.out}")


if __name__ == "__main__":
    main()
