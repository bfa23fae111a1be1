"""The default model's recipe ablation at equal compute: v2's recipe, each change alone, all together, and a narrower
student, every run given the same minutes of training-step compute and scored on the same held-out tracks.

    .venv/bin/python scripts/ablation.py --data runs/corpus-cache --valid-data runs/valid-cache --out runs/ablation \\
        [--minutes 10] [--only NAME,...] [--voices runs/voices-cache --music-only-data runs/game-cache]

--data needs the teacher's segment labels (`samplecnn teach --data CACHE`) for the runs without an online teacher;
--valid-data is a cache whose valid split has teacher labels (the held-out packages). Runs continue where they
stopped (`--resume`) and finished ones are not run again, so the script can be interrupted and restarted. Before a
cosine run, a short calibration run measures its seconds per step, so that the schedule ends when the budget does:
run it alone (another job on the cores inflates the CPU time per step, and the plan then ends early).
The scores are each run's final weights (the moving average where the recipe keeps one) against the teacher, twice:
on the first --valid-segments (12) segments of every held-out track (the teacher's labels of those same segments)
and on the whole tracks (the model card's metric). Writes OUT/table.md (markdown), OUT/ablation.json and
OUT/curves.png (held-out ROC-AUC of each validation against compute minutes).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
from pathlib import Path

import torch

from samplecnn import metrics
from samplecnn.train import Run, TrainConfig

# v2's recipe (the bundled default's model card): SGD at 0.01 on the teacher's precomputed segment labels, BCE.
V2 = dict(recipe="paper", amp="bf16", batch_size=16, epoch_repeats=8, valid_segments=12)
ALL = dict(V2, recipe="cosine", teacher="both", loss="logit-mse")
VOICES, MUSIC_ONLY = "<--voices>", "<--music-only-data>"  # filled in from the command line
V3 = dict(V2, teacher="both", voices=VOICES, lr=0.002, ema=0.999, init="default", epoch_steps=300)
WIDTH = dict(V2, recipe="cosine", teacher="labels", data=MUSIC_ONLY)
RUNS = {  # name -> (what changes, options); "init" continues from the bundled default where the width allows
    "v2": ("v2's recipe, continued", dict(V2, init="default")),
    "views": ("+ consistent teaching (online teacher on augmented views)", dict(V2, teacher="both", init="default")),
    "logit": ("+ logit MSE loss", dict(V2, loss="logit-mse", init="default")),
    "cosine": ("+ AdamW, warm-up, cosine, EMA", dict(V2, recipe="cosine", init="default")),
    "all": ("all three", dict(ALL, init="default")),
    "all-scratch": ("all three, from scratch", dict(ALL)),
    "all-w0.5": ("all three, width 0.5, from scratch", dict(ALL, width=0.5)),
    # the long run's recipe (consistent teaching on game music + MIDI renders + voices, SGD from v2 at a gentler
    # rate, moving average), then one change at a time: where its plateau below v2 comes from
    "v3": ("the v3 long run's recipe (views of game music + MIDI renders + voices, SGD at 0.002, EMA)", V3),
    "v3-game": ("v3 on game music alone (no MIDI renders, no voices)", dict(V3, data=MUSIC_ONLY, voices=None)),
    "v3-game-plain": ("v3-game without augmentation (clean crops at any offset, the teacher on each)",
                      dict(V3, data=MUSIC_ONLY, voices=None, augment=False)),
    "v3-logit": ("v3 + logit MSE loss", dict(V3, loss="logit-mse")),
    "v3-nodrop": ("v3 without dropout before the head", dict(V3, dropout=0.0)),
    # the width pair at equal compute, both from scratch on the long run's data (the game music's views labelled
    # ahead, so that a step costs the student alone and a narrower one gets proportionally more steps), each on a
    # cosine schedule planned to end with the budget
    "w1": ("width 1.0 from scratch: game-music views labelled ahead, AdamW cosine, EMA", WIDTH),
    "w0.5": ("width 0.5 from scratch (1/4 of the FLOPs per segment), otherwise w1", dict(WIDTH, width=0.5)),
}
TAG_COLUMNS = ("guitar", "synth", "piano", "electronic", "drums")
EPOCH_STEPS = 150  # steps between validations for runs with an online teacher (~ an epoch of v2's recipe)


def seconds_per_step(cfg: TrainConfig, scratch: Path, steps: int = 12) -> float:
    """Compute seconds per step of this configuration, from a short run (the first 2 steps are warm-up)."""
    shutil.rmtree(scratch, ignore_errors=True)
    times = []
    for n in (2, steps):
        _Unexported(dataclasses.replace(cfg, out=str(scratch), stop_after_steps=n, resume=n != 2, epochs=1000,
                                        epoch_steps=max(EPOCH_STEPS, steps + 1))).fit()
        state = torch.load(scratch / "last.pt", weights_only=True)
        times.append(state["progress"]["compute_seconds"])
    shutil.rmtree(scratch, ignore_errors=True)
    return (times[1] - times[0]) / (steps - 2)


class _Unexported(Run):
    """A run that ends without the export: the ablation reads its last validation (the first `valid_segments` of
    every held-out track, the moving average where the recipe keeps one), which spares two passes over all of them."""

    def export(self):
        return None


def run_config(name: str, options: dict, args: argparse.Namespace) -> TrainConfig:
    out = args.out / name
    fill = {VOICES: args.voices, MUSIC_ONLY: args.music_only_data}
    options = {k: fill.get(v, v) if isinstance(v, str) else v for k, v in options.items()}
    missing = sorted(flag for flag, value in fill.items() if value is None and flag in RUNS[name][1].values())
    if missing:
        raise SystemExit(f"run {name} needs {', '.join(m.strip('<>') for m in missing)}")
    cfg = TrainConfig(**{**dict(data=args.data, out=str(out), valid_data=args.valid_data, budget_minutes=args.minutes,
                                epoch_steps=EPOCH_STEPS, checkpoint_every=50, seed=args.seed), **options})
    if cfg.recipe == "cosine":  # plan the schedule to end with the budget
        plan_file = out / "plan.json"
        if plan_file.is_file():
            plan = json.loads(plan_file.read_text())
        else:
            sps = seconds_per_step(cfg, args.out / f"{name}.calibrate")
            steps = int(60 * args.minutes / sps)
            per_epoch = EPOCH_STEPS if cfg.teacher != "none" else None
            if per_epoch is None:  # an epoch of cache crops: every training clip epoch_repeats times
                from samplecnn.data import Cache
                per_epoch = math.ceil(len(Cache(cfg.data).indices("train")) * cfg.epoch_repeats / cfg.batch_size)
            epochs = max(1, round(steps / per_epoch))
            plan = {"seconds_per_step": sps, "steps": steps, "epochs": epochs}
            if cfg.teacher != "none":  # epochs of views can have any length: make the plan the calibrated steps
                plan["epoch_steps"] = math.ceil(steps / epochs)
            out.mkdir(parents=True, exist_ok=True)
            plan_file.write_text(json.dumps(plan))
        cfg = dataclasses.replace(cfg, epochs=plan["epochs"], epoch_steps=plan.get("epoch_steps", cfg.epoch_steps))
    last = out / "last.pt"
    if not (last.is_file() and torch.load(last, weights_only=True)["progress"]["done"]):
        _Unexported(dataclasses.replace(cfg, resume=last.is_file())).fit()
    return cfg


def final_scores(cfg: TrainConfig, restore: bool = True) -> dict:
    """The run's final weights (the moving average where the recipe keeps one) scored twice against the teacher:
    on the first `valid_segments` segments of each held-out track (what the teacher says of those same segments),
    and on the whole tracks (the model card's metric). Kept in OUT/NAME/scores.json."""
    path = Path(cfg.out) / "scores.json"
    if path.is_file():
        return json.loads(path.read_text())
    run = _Unexported(dataclasses.replace(cfg, resume=restore))
    if restore:
        run.restore()
    result = {}
    for key, segments in (("first", cfg.valid_segments), ("full", None)):
        scores, _, references = run.predict(run.valid_idx, segments)
        summary = metrics.summary(references, scores, list(run.valid_cache.tags))
        frequent = [r["roc_auc"] for r in summary["per_tag"] if r["roc_auc"] is not None and r["positives"] >= 4]
        result[key] = {"roc_auc": summary["roc_auc"], "pr_auc": summary["pr_auc"], "spearman": summary["spearman"],
                       "frequent_roc_auc": sum(frequent) / len(frequent) if frequent else None,
                       **{r["tag"]: r["roc_auc"] for r in summary["per_tag"] if r["tag"] in TAG_COLUMNS}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))
    return result


def start_row(args: argparse.Namespace) -> dict:
    """The bundled default scored the same way, before any of the runs: where every run from it starts."""
    cfg = TrainConfig(data=args.data, out=str(args.out / "start"), valid_data=args.valid_data, init="default",
                      **{k: v for k, v in V2.items() if k != "recipe"})
    scores = final_scores(cfg, restore=False)
    return {"name": "default", "change": "the bundled default (v2), where the runs from it start", "steps": 0,
            "compute_minutes": 0, **scores, "curve": []}


def row(name: str, cfg: TrainConfig) -> dict:
    metrics_log = [json.loads(line) for line in (Path(cfg.out) / "metrics.jsonl").read_text().splitlines()]
    final = metrics_log[-1]
    return {"name": name, "change": RUNS[name][0], "steps": final["step"], "compute_minutes": final["compute_minutes"],
            **final_scores(cfg), "curve": [(m["compute_minutes"], m["valid_roc_auc"]) for m in metrics_log]}


def table(rows: list[dict]) -> str:
    """Markdown: one row per run; the first 12 segments of each held-out track, then the whole tracks."""
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    head = ("ROC-AUC", "PR-AUC", "Spearman")
    lines = ["| run | change | steps | compute min | " + " | ".join(f"first 12: {h}" for h in head) + " | "
             + " | ".join(f"whole: {h}" for h in head) + " | whole: tags >= 4 pos. | "
             + " | ".join(TAG_COLUMNS) + " |", "|---" * (11 + len(TAG_COLUMNS)) + "|"]
    for r in rows:
        first, full = r["first"], r["full"]
        lines.append(f"| {r['name']} | {r['change']} | {r['steps']} | {r['compute_minutes']} | "
                     + " | ".join(fmt(first[k]) for k in ("roc_auc", "pr_auc", "spearman")) + " | "
                     + " | ".join(fmt(full[k]) for k in ("roc_auc", "pr_auc", "spearman", "frequent_roc_auc")) + " | "
                     + " | ".join(fmt(full.get(t)) for t in TAG_COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def plot_curves(rows: list[dict], path: Path) -> None:
    """Held-out ROC-AUC (training's validation, first segments of each track) against compute, one line per run."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        points = [(x, y) for x, y in r["curve"] if x is not None]
        ax.plot(*zip(*points), marker="o", label=r["name"]) if points else None
    ax.set_xlabel("training-step compute (min)")
    ax.set_ylabel("held-out macro ROC-AUC (validation)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--valid-data", required=True)
    parser.add_argument("--out", type=Path, default=Path("runs/ablation"))
    parser.add_argument("--voices", help="a voice cache (`samplecnn corpus voices`), for the v3 runs")
    parser.add_argument("--music-only-data", help="--data without the MIDI renders, for v3-game")
    parser.add_argument("--minutes", type=float, default=10.0, help="training-step compute per run")
    parser.add_argument("--only", help="comma-separated run names (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(RUNS)
    unknown = sorted(set(names) - set(RUNS))
    if unknown:
        parser.error(f"unknown run(s) {', '.join(unknown)}; choose from {', '.join(RUNS)}")
    rows = [start_row(args)]
    for name in names:  # the table is rewritten after every run, so an interrupted ablation still shows its rows
        rows.append(row(name, run_config(name, RUNS[name][1], args)))
        (args.out / "ablation.json").write_text(json.dumps(rows, indent=1))
        (args.out / "table.md").write_text(table(rows))
        plot_curves(rows, args.out / "curves.png")
    print(table(rows))


if __name__ == "__main__":
    main()
