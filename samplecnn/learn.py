"""`samplecnn learn`: a new tag from examples, in seconds, as a tag pack (samplecnn.packs).

Per tag, a class-balanced logistic regression (scikit-learn, standardised inputs) on a model's song embeddings
(`Tagger.embed`: the mean of the segments' penultimate features). The embeddings of files already in a library
(`--db`, same model id, unchanged size and mtime) are read from it instead of decoding the files again.

Negatives of a tag: the `--negative` files, plus the other tags' positives (a table of several tags); when that
leaves none and a library is given, random library tracks that no tag lists as positive (unlabelled tracks: a few
may in truth have the tag, which costs a little precision, not correctness).

What is reported per tag: examples per class, a stratified cross-validated ROC-AUC (k = min(5, smallest class)
folds, out-of-fold predictions pooled), and the F1-best threshold on those out-of-fold predictions (what the pack
decides with). Fewer than MIN_PER_CLASS examples in a class is refused; fewer than WARN_PER_CLASS is warned about.
"""

from __future__ import annotations

import csv
import difflib
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import packs
from .errors import SampleCNNError

MIN_PER_CLASS = 2
WARN_PER_CLASS = 10
DEFAULT_C = 1.0          # inverse L2 strength on standardised embeddings
MIN_LIBRARY_NEGATIVES = 20


@dataclass
class TagReport:
    tag: str
    positives: int
    negatives: int
    negatives_from: str
    cv_folds: int
    cv_roc_auc: float
    threshold: float


@dataclass
class LearnReport:
    pack: packs.TagPack
    out: Path
    tags: list[TagReport]
    failures: list[tuple[str, str]] = field(default_factory=list)
    inputs: int = 0
    from_library: int = 0
    decoded: int = 0
    seconds: float = 0.0


def read_table(path: str | os.PathLike) -> list[tuple[str, str]]:
    """(path, tag) rows of a CSV table; a `path,tag` header, blank lines and `#` comments are skipped. Relative
    paths are relative to the table's folder; a path may be a file or a folder of audio files."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except OSError as e:
        raise SampleCNNError(f"cannot read the table ({e.strerror or e})", path) from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise SampleCNNError(f"not a CSV table of path,tag rows ({e})", path) from None
    out = []
    for i, row in enumerate(rows, 1):
        cells = [c.strip() for c in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if i == 1 and [c.lower() for c in cells[:2]] == ["path", "tag"]:
            continue
        if len(cells) < 2 or not cells[0] or not cells[1]:
            raise SampleCNNError(f"line {i}: expected path,tag", path)
        p = Path(cells[0]).expanduser()
        out.append((os.fspath(p if p.is_absolute() else path.parent / p), cells[1]))
    if not out:
        raise SampleCNNError("the table has no path,tag rows", path)
    return out


def learn(positives: dict[str, list[str]], negatives: list[str], out: str | os.PathLike, *, model: str = "default",
          db: str | os.PathLike | None = None, library_negatives: int | None = None, seed: int = 0,
          force: bool = False, device: str | None = None, batch_size: int | None = None,
          only: list[str] | None = None, say: Callable[[str], None] = print,
          progress: bool = False) -> LearnReport:
    """Learn one tag per key of `positives` (tag -> files or folders; with `only`, just those tags: the others'
    positives still serve as negatives) and write the pack to `out`."""
    start = time.monotonic()
    out = Path(out)
    if out.exists() and not force:  # before any decoding: minutes of work must not end in this refusal
        raise SampleCNNError("already exists (pass --force to replace it)", out)
    learned = list(only) if only else list(positives)
    model_tags = set(packs.checkpoint_tags(model))
    for tag in learned:
        problem = packs.tag_name_problem(tag)
        if problem:
            raise SampleCNNError(problem)
        if tag in model_tags:
            raise SampleCNNError(f"{tag!r} is one of the model's own tags; give yours another name "
                                 f"(e.g. 'my {tag}')")
    packs.check_field_names(learned)
    model_id = packs.model_id_of(model)

    from .audio import find_audio

    failures: list[tuple[str, str]] = []
    n_inputs = 0

    def expand(inputs: list[str]) -> list[str]:
        nonlocal n_inputs
        files, errors = find_audio(inputs)
        n_inputs += len(errors)
        failures.extend((e.path, e.reason) for e in errors)
        return [os.path.abspath(f) for f in files]

    pos = {tag: expand(inputs) for tag, inputs in positives.items()}
    neg = expand(negatives)
    for tag in learned:
        clash = sorted(set(pos[tag]) & set(neg))
        if clash:
            raise SampleCNNError(f"tag {tag!r}: listed both as a positive and as a negative example", clash[0])

    lib = _open_library(db, model_id, say) if db is not None else None
    try:
        plan, sources = _negatives(pos, learned, neg, lib, model_id, library_negatives, seed, db)
        for tag, (p, n) in plan.items():
            _check_counts(tag, len(p), len(n))
        wanted = sorted({f for p, n in plan.values() for f in p + n})
        n_inputs += len(wanted)
        embeddings, from_library, decoded = _embeddings(wanted, lib, model_id, model, sources, failures, device,
                                                        batch_size, progress)
    finally:
        if lib is not None:
            lib.close()

    rows, reports = [], []
    for tag, (p, n) in plan.items():
        p = [f for f in p if f in embeddings]
        n = [f for f in n if f in embeddings]
        _check_counts(tag, len(p), len(n), after_failures=True)
        x = np.stack([embeddings[f] for f in p + n]).astype(np.float64)
        y = np.r_[np.ones(len(p), int), np.zeros(len(n), int)]
        w, b, auc, k, threshold = _fit(x, y, seed)
        rows.append((w, b, threshold))
        reports.append(TagReport(tag, len(p), len(n), sources[tag], k, auc, threshold))
        _say_tag(say, reports[-1])

    from . import __version__

    pack = packs.TagPack(
        tags=list(plan), weights=np.stack([r[0] for r in rows]), biases=np.array([r[1] for r in rows]),
        thresholds=np.array([r[2] for r in rows]), model_id=model_id,
        training=[{"tag": r.tag, "positives": r.positives, "negatives": r.negatives,
                   "negatives_from": r.negatives_from, "cv_folds": r.cv_folds, "cv_roc_auc": r.cv_roc_auc,
                   "classifier": f"class-balanced L2 logistic regression, C={DEFAULT_C}, standardised inputs",
                   "seed": seed} for r in reports],
        created=packs.now(), samplecnn_version=__version__)
    packs.write_pack(pack, out, overwrite=force)
    return LearnReport(pack=pack, out=out, tags=reports, failures=failures, inputs=n_inputs,
                       from_library=from_library, decoded=decoded, seconds=time.monotonic() - start)


def select_tags(table: list[tuple[str, str]], wanted: list[str], source: str) -> tuple[dict[str, list[str]], list]:
    """(tag -> positives of every tag of the table, the tags to learn: all of them, or `wanted`)."""
    by_tag: dict[str, list[str]] = {}
    for path, tag in table:
        by_tag.setdefault(tag, []).append(path)
    for tag in wanted:
        if tag not in by_tag:
            close = difflib.get_close_matches(tag, list(by_tag), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f" (it has: {', '.join(sorted(by_tag))})"
            raise SampleCNNError(f"unknown tag {tag!r}: not in the table{hint}", source)
    return by_tag, list(wanted or by_tag)


def _open_library(db, model_id: str, say):
    from .library import store

    lib = store.Library(db, readonly=True)
    if not any(m.model_id == model_id for m in lib.models()):
        say(f"note: {db} holds no tracks of model {model_id}: every example is decoded")
    return lib


def _negatives(pos: dict[str, list[str]], learned: list[str], neg: list[str], lib, model_id: str,
               library_negatives: int | None, seed: int, db) -> tuple[dict[str, tuple[list[str], list[str]]], dict]:
    """tag -> (positives, negatives), and where each tag's negatives come from (words for the report)."""
    plan, sources = {}, {}
    listed = {f for files in pos.values() for f in files}
    drawn: list[str] | None = None
    for tag in learned:
        files = pos[tag]
        mine = set(files)
        others = [f for t, fs in pos.items() if t != tag for f in fs if f not in mine]
        negatives = list(dict.fromkeys(neg + others))
        words = []
        if neg:
            words.append("--negative files")
        if others:
            words.append("the other tags' positives")
        if not negatives and lib is not None:
            if drawn is None:
                drawn, rows = _draw_library(lib, model_id, listed, library_negatives, len(files), seed)
                sources["library_rows"] = rows
            negatives = drawn
            words.append(f"random tracks of {db} not listed as positive")
        if not negatives:
            raise SampleCNNError(f"tag {tag!r}: no negative examples; give --negative FILE_OR_DIR (or a table of "
                                 "several tags, or --db LIBRARY to draw random library tracks)")
        plan[tag] = (files, negatives)
        sources[tag] = " and ".join(words)
    return plan, sources


def _draw_library(lib, model_id: str, listed: set[str], n: int | None, n_pos: int, seed: int):
    paths, matrix = lib.matrix(model_id, "embedding")
    candidates = [i for i, p in enumerate(paths) if p not in listed]
    want = n if n is not None else max(MIN_LIBRARY_NEGATIVES, 2 * n_pos)
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(candidates), size=min(want, len(candidates)), replace=False).tolist())
    rows = {paths[candidates[i]]: matrix[candidates[i]] for i in chosen}
    return list(rows), rows


def _embeddings(files: list[str], lib, model_id: str, model: str, sources: dict, failures: list, device,
                batch_size, progress: bool) -> tuple[dict[str, np.ndarray], int, int]:
    """path -> song embedding, from the library where it holds the file unchanged, else by decoding it."""
    rows = dict(sources.get("library_rows", {}))
    todo = []
    for f in files:
        if f in rows:
            continue
        t = lib.track(f, model_id) if lib is not None else None
        if t is not None:
            try:
                st = os.stat(f)
                if (st.st_size, st.st_mtime_ns) == (t.size, t.mtime_ns):
                    rows[f] = t.embedding
                    continue
            except OSError:
                pass
        todo.append(f)
    from_library = len(rows)
    if todo:
        from tqdm import tqdm

        from . import inference

        tagger = inference.load(model, device=device, batch_size=batch_size)
        for f in tqdm(todo, unit="file", disable=not progress or len(todo) <= 3, file=sys.stderr,
                      dynamic_ncols=True, desc="embedding"):
            try:
                rows[f] = tagger.embed(f)
            except SampleCNNError as e:
                if e.path is None:
                    raise
                failures.append((e.path, e.reason))
    return rows, from_library, len(todo)


def _check_counts(tag: str, n_pos: int, n_neg: int, after_failures: bool = False) -> None:
    if min(n_pos, n_neg) < MIN_PER_CLASS:
        why = " (after leaving out the files that failed)" if after_failures else ""
        raise SampleCNNError(f"tag {tag!r}: {n_pos} positive and {n_neg} negative example(s){why}; each class "
                             f"needs at least {MIN_PER_CLASS} ({WARN_PER_CLASS} or more for a dependable tag)")


def _fit(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, float, float, int, float]:
    """(weights, bias) on raw embeddings, the cross-validated ROC-AUC, the folds, the F1-best threshold."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def classifier():
        return make_pipeline(StandardScaler(), LogisticRegression(C=DEFAULT_C, class_weight="balanced",
                                                                  max_iter=5000))

    k = int(min(5, np.bincount(y).min()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        oof = cross_val_predict(classifier(), x, y, cv=StratifiedKFold(k, shuffle=True, random_state=seed),
                                method="predict_proba")[:, 1]
        fitted = classifier().fit(x, y)
    auc = float(roc_auc_score(y, oof))
    threshold = f1_threshold(y, oof)
    scaler, lr = fitted[0], fitted[1]
    w = lr.coef_[0] / scaler.scale_
    b = float(lr.intercept_[0] - w @ scaler.mean_)
    return w, b, auc, k, threshold


def f1_threshold(y: np.ndarray, scores: np.ndarray) -> float:
    """The F1-best decision threshold on (out-of-fold) scores, placed halfway in log-odds between the lowest
    score it accepts and the next lower score: the same decisions on these songs, with a margin on both sides
    (the lowest accepted score itself would put a positive exactly on the edge)."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, cuts = precision_recall_curve(y, scores)
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    best = int(np.argmax(f1))
    below = scores[scores < cuts[best]]
    if below.size == 0:
        return float(cuts[best])
    p = np.clip([below.max(), cuts[best]], 1e-12, 1 - 1e-12)
    return float(1 / (1 + np.exp(-np.log(p / (1 - p)).mean())))


def _say_tag(say, r: TagReport) -> None:
    say(f"{r.tag}: {r.positives} positive, {r.negatives} negative ({r.negatives_from}); cross-validated ROC-AUC "
        f"{r.cv_roc_auc:.3f} ({r.cv_folds} folds); threshold {r.threshold:.3f}")
    if min(r.positives, r.negatives) < WARN_PER_CLASS:
        say(f"  warning: fewer than {WARN_PER_CLASS} examples in a class: the AUC is a rough guess and the tag "
            "may not generalise; add examples")
