"""Score the instrument evaluation set (`samplecnn corpus midi --eval-instruments --out DIR`) with a samplecnn
model and with the musicnn teacher, and print a markdown table.

    .venv/bin/python scripts/eval_instruments.py DIR [--model default] [--no-teacher | --no-student]

Per model: the macro ROC-AUC over the instrument tags (for each tag, its song-level score ranks the clips that
truly have it against those that do not; tags without both kinds of clip are left out), and the top-1 accuracy (the
share of clips with an instrument tag whose highest-scoring instrument tag is a true one; the organ clips, which
have no MTAT instrument tag, count for ROC only). Then the ROC-AUC per tag. The clips are rendered through
csound-soundfont, which training never uses.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np


def instrument_metrics(truth: list[set[str]], scores: np.ndarray, tags: list[str]):
    """(macro ROC-AUC, top-1 accuracy, {tag: ROC-AUC}) of `scores` (clips x tags) against the true tag sets."""
    from sklearn.metrics import roc_auc_score

    per_tag = {}
    for j, tag in enumerate(tags):
        y = np.array([tag in t for t in truth])
        if 0 < y.sum() < len(y):
            per_tag[tag] = float(roc_auc_score(y, scores[:, j]))
    hits = [tags[int(np.argmax(s))] in t for s, t in zip(scores, truth) if t & set(tags)]
    return (float(np.mean(list(per_tag.values()))) if per_tag else float("nan"),
            float(np.mean(hits)) if hits else float("nan"), per_tag)


def _scores(tag_fn, model_tags: list[str], paths: list[Path], tags: list[str]) -> np.ndarray:
    missing = [t for t in tags if t not in model_tags]
    if missing:
        sys.exit(f"eval_instruments: the model has no tag {', '.join(missing)}")
    cols = [model_tags.index(t) for t in tags]
    out = []
    for i, p in enumerate(paths, 1):
        out.append(np.asarray(tag_fn(p))[cols])
        print(f"\r  {i}/{len(paths)}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return np.array(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("eval_dir", type=Path)
    parser.add_argument("--model", default="default", help="registered name or checkpoint path (default: default)")
    parser.add_argument("--no-teacher", action="store_true", help="score the samplecnn model only")
    parser.add_argument("--no-student", action="store_true", help="score the teacher only")
    args = parser.parse_args()

    import samplecnn
    from samplecnn.corpus.eval_instruments import INSTRUMENT_TAGS

    labels = args.eval_dir / "labels.csv"
    try:
        with open(labels, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        sys.exit(f"eval_instruments: {labels}: cannot be read ({e.strerror})")
    paths = [args.eval_dir / r["path"] for r in rows]
    truth = [set(filter(None, r["tags"].split(";"))) for r in rows]
    tags = list(INSTRUMENT_TAGS)

    results = {}
    if not args.no_student:
        student = samplecnn.load(args.model)
        print(f"{args.model}: tagging {len(paths)} clips", file=sys.stderr)
        results[f"samplecnn ({args.model})"] = _scores(lambda p: student.tag(p).scores, list(student.tags), paths,
                                                       tags)
    if not args.no_teacher:
        from samplecnn.teachers.musicnn import load_teacher

        teacher_scores = []
        for name in ("MTT_musicnn", "MTT_vgg"):
            teacher = load_teacher(name)
            print(f"{name}: tagging {len(paths)} clips", file=sys.stderr)
            results[name] = _scores(lambda p, t=teacher: t.tag(p).scores, list(teacher.tags), paths, tags)
            teacher_scores.append(results[name])
        results["teacher mean (musicnn + vgg)"] = np.mean(teacher_scores, axis=0)

    n_top = sum(bool(t & set(tags)) for t in truth)
    print(f"\n{len(rows)} clips ({n_top} with an instrument tag), instrument tags: {', '.join(tags)}\n")
    print("| model | instrument macro ROC-AUC | top-1 accuracy |")
    print("|---|---|---|")
    per = {}
    for name, s in results.items():
        roc, top1, per[name] = instrument_metrics(truth, s, tags)
        print(f"| {name} | {roc:.3f} | {top1:.3f} |")
    print("\n| tag | " + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    for tag in tags:
        cells = [f"{per[m][tag]:.3f}" if tag in per[m] else "-" for m in results]
        print(f"| {tag} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
