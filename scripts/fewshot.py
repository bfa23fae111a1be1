"""Few-shot: which Debian corpus package a track comes from, learned from k tracks per package in three ways.

    .venv/bin/python scripts/fewshot.py --corpus CORPUS [--work runs/fewshot] [--budget-minutes 1]

CORPUS is a folder built by `samplecnn corpus debian` (its manifest.csv and audio/). The task: the packages with at
least 28 tracks (each game's soundtrack has its composers and its style); per package, with a fixed seed, 6 tracks
are the test set, 2 the validation set of the trained models, and the k training tracks are the first k of the
next 20 (the 5 are among the 20). Every track is represented by the 30-s block around its middle, decoded once to a
WAV file, so that the three ways see exactly the same audio:

- (a) tag pack: `samplecnn learn --table` on the default model's song embeddings (reused from a library of the
  excerpts, `--db`), scored on the test tracks' stored embeddings by the pack itself;
- (b) fine-tuned: `samplecnn train --init default` on a `prepare folder` cache of the same k tracks, all layers, and
  with `--freeze 8` (the stem and the first seven blocks kept), `--augment-crops`;
- (c) from scratch: the same `train` command without `--init`.

Every training run gets the same recipe (adam), batch and step-compute budget (`--budget-minutes`). Printed: a
markdown table of top-1 accuracy (the highest-scoring package) and macro one-vs-rest ROC-AUC on the test tracks.
Resumable: each step's outputs are kept in the work folder (results.json holds the finished cells); rerun to go on.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

MIN_TRACKS = 28           # test + valid + the largest k
TEST, VALID = 6, 2        # tracks per package
SHOTS = (5, 20)
EXCERPT_SECONDS = 30.0
SEED = 0
TRAINED = {               # method -> (run folder, the extra `samplecnn train` options)
    "fine-tuned (--init default)": ("finetuned", ["--init", "default"]),
    "fine-tuned, --freeze 8": ("frozen8", ["--init", "default", "--freeze", "8"]),
    "from scratch": ("scratch", []),
}


def splits(manifest: Path) -> dict[str, dict[str, list[dict]]]:
    """package -> {"test", "valid", "pool"} manifest rows, drawn with the fixed seed."""
    with open(manifest, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    by_package: dict[str, list[dict]] = {}
    for r in sorted(rows, key=lambda r: r["path"]):
        by_package.setdefault(r["package"], []).append(r)
    out = {}
    rng = np.random.default_rng(SEED)
    for package in sorted(by_package):
        tracks = by_package[package]
        if len(tracks) < MIN_TRACKS:
            continue
        order = [tracks[i] for i in rng.permutation(len(tracks))]
        out[package] = {"test": order[:TEST], "valid": order[TEST:TEST + VALID],
                        "pool": order[TEST + VALID:TEST + VALID + max(SHOTS)]}
    return out


def excerpt(corpus: Path, row: dict, out: Path) -> None:
    """The 30-s block of the track that holds its middle, as 16-bit WAV at the models' rate (written atomically)."""
    import soundfile as sf

    from samplecnn import audio
    from samplecnn.segments import SAMPLE_RATE

    if out.exists():
        return
    wanted = int(float(row["duration"]) / 2 // EXCERPT_SECONDS)
    block = None
    with audio.stream(corpus / row["path"], sr=SAMPLE_RATE, block_seconds=EXCERPT_SECONDS) as blocks:
        for i, b in enumerate(blocks):
            block = b
            if i == wanted:
                break
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.wav")
    sf.write(tmp, block, SAMPLE_RATE, subtype="PCM_16")
    os.replace(tmp, out)


def samplecnn(*argv) -> None:
    """Run a samplecnn command as a user would; its output goes to stderr, so stdout keeps only the table."""
    argv = [str(a) for a in argv]
    print("$ samplecnn " + " ".join(argv), file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "samplecnn", *argv], check=True, stdout=sys.stderr)


def metrics(classes: list[str], truth: list[str], scores: np.ndarray) -> dict:
    """Top-1 accuracy and macro one-vs-rest ROC-AUC; `scores` has one column per class, in `classes` order."""
    from sklearn.metrics import roc_auc_score

    y = np.array([classes.index(t) for t in truth])
    aucs = [roc_auc_score(y == c, scores[:, c]) for c in range(len(classes))]
    return {"accuracy": float(np.mean(scores.argmax(1) == y)), "roc_auc": float(np.mean(aucs))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, required=True, help="a `samplecnn corpus debian` folder")
    parser.add_argument("--work", type=Path, default=Path("runs/fewshot"), help="default: %(default)s")
    parser.add_argument("--budget-minutes", type=float, default=1.0,
                        help="step compute of each training run (default: %(default)s)")
    args = parser.parse_args()
    work = args.work.resolve()
    excerpts = work / "excerpts"
    work.mkdir(parents=True, exist_ok=True)

    plan = splits(args.corpus / "manifest.csv")
    classes = list(plan)
    name = {}  # manifest path -> excerpt path
    print(f"{len(classes)} packages with at least {MIN_TRACKS} tracks: {', '.join(classes)}", file=sys.stderr)
    for package, parts in plan.items():
        for row in (r for part in parts.values() for r in part):
            name[row["path"]] = excerpts / package / (Path(row["path"]).stem + ".wav")
            excerpt(args.corpus, row, name[row["path"]])

    library = work / "library.sqlite"
    samplecnn("index", excerpts, "--db", library)
    test = [(package, name[r["path"]]) for package, parts in plan.items() for r in parts["test"]]
    truth = [p for p, _ in test]

    results_path = work / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}

    def done(key: str, value: dict) -> None:
        results[key] = value
        tmp = results_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1))
        os.replace(tmp, results_path)

    for k in SHOTS:
        train = {p: [name[r["path"]] for r in parts["pool"][:k]] for p, parts in plan.items()}
        # (a) a tag pack on the default model's embeddings, reused from the library
        key = f"tag pack (samplecnn learn)/{k}"
        if key not in results:
            table = work / f"learn_{k}.csv"
            with open(table, "w", newline="", encoding="utf-8") as f:
                csv.writer(f).writerows([["path", "tag"]] + [[path, p] for p, files in train.items()
                                                             for path in files])
            pack_path = work / f"pack_{k}.json"
            samplecnn("learn", "--table", table, "--db", library, "--out", pack_path, "--force")
            done(key, _pack_metrics(pack_path, library, classes, test, truth))

        # (b), (c): trained on a cache of the same tracks (valid: the 2 held out per package)
        cache = work / f"cache_{k}"
        if any(f"{m}/{k}" not in results for m in TRAINED):
            labels = work / f"labels_{k}.csv"
            with open(labels, "w", newline="", encoding="utf-8") as f:
                rows = [[name[r["path"]].relative_to(excerpts), p, split] for p, parts in plan.items()
                        for split, part in (("train", parts["pool"][:k]), ("valid", parts["valid"]),
                                            ("test", parts["test"])) for r in part]
                csv.writer(f).writerows([["path", "tags", "split"]] + rows)
            if not (cache / "meta.json").exists():
                samplecnn("prepare", "folder", "--audio", excerpts, "--labels", labels, "--split-column", "split",
                          "--out", cache)
        for method, (folder, extra) in TRAINED.items():
            key = f"{method}/{k}"
            if key in results:
                continue
            run = work / f"run_{k}_{folder}"
            resume = ["--resume"] if (run / "last.pt").exists() else []
            if not (run / "model.safetensors").exists():
                samplecnn("train", "--data", cache, "--out", run, "--recipe", "adam", "--batch-size", 16,
                          "--seed", SEED, "--epoch-repeats", max(1, 20 // k), "--valid-segments", 4,
                          "--augment-crops", "--budget-minutes", args.budget_minutes, *extra, *resume)
            done(key, _model_metrics(run / "model.safetensors", classes, test, truth))

    print(markdown_table(results, classes, len(test)))


def _pack_metrics(pack_path: Path, library: Path, classes: list[str], test, truth) -> dict:
    """The pack's scores of the test tracks, from their stored embeddings (TagPack.scores, as `tag --tags`)."""
    from samplecnn import packs
    from samplecnn.library import store

    pack = packs.read_pack(pack_path)
    with store.Library(library, readonly=True) as lib:
        model = lib.model()
        embeddings = np.stack([lib.track(str(path), model.model_id).embedding for _, path in test])
    scores = pack.scores(embeddings)
    return metrics(classes, truth, scores[:, [pack.tags.index(c) for c in classes]])


def _model_metrics(checkpoint: Path, classes: list[str], test, truth) -> dict:
    """A trained model's song-level scores of the test tracks (Tagger.tag, as `samplecnn tag`)."""
    import samplecnn

    tagger = samplecnn.load(checkpoint)
    scores = np.stack([tagger.tag(path).scores for _, path in test])
    return metrics(classes, truth, scores[:, [tagger.tags.index(c) for c in classes]])


def markdown_table(results: dict, classes: list[str], n_test: int) -> str:
    methods = ["tag pack (samplecnn learn)", *TRAINED]
    lines = [f"Test: {n_test} tracks of {len(classes)} packages; top-1 accuracy / macro ROC-AUC "
             f"(chance: {1 / len(classes):.2f} / 0.50).", "",
             "| tracks per package | " + " | ".join(methods) + " |",
             "|---:|" + "---:|" * len(methods)]
    for k in SHOTS:
        cells = []
        for m in methods:
            r = results.get(f"{m}/{k}")
            cells.append(f"{r['accuracy']:.2f} / {r['roc_auc']:.3f}" if r else "-")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
