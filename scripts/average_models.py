"""Average the weights of checkpoints that share a start (a "model soup", Wortsman et al. 2022) into one model.

    .venv/bin/python scripts/average_models.py OUT.safetensors A.safetensors B.safetensors [...] \
        [--weights 0.5,0.5] --valid-data runs/valid-cache

Fine-tuned continuations of the same weights sit in one basin, so their average is a model of its own, often better
than each of them on music none of them trained on. BatchNorm statistics are averaged with the weights. The decision
thresholds are calibrated afresh on --valid-data's valid split, as `samplecnn train` calibrates its export.
"""

from __future__ import annotations

import argparse

import torch

from samplecnn import checkpoint, metrics
from samplecnn.data import Cache
from samplecnn.evaluate import clip_scores
from samplecnn.inference import Tagger


def averaged(paths: list[str], weights: list[float]) -> tuple[torch.nn.Module, checkpoint.ModelInfo]:
    """The weighted mean of the checkpoints' tensors (integer counters: the first's), in the first's model."""
    models = [checkpoint.read(p) for p in paths]
    model, info = models[0]
    for path, (_, other) in zip(paths[1:], models[1:]):
        if (other.arch, other.config, other.tags) != (info.arch, info.config, info.tags):
            raise SystemExit(f"average_models: {path} is another architecture or tag vocabulary than {paths[0]}")
    states = [m.state_dict() for m, _ in models]
    mean = {k: (sum(w * s[k] for w, s in zip(weights, states)) if v.is_floating_point() else v)
            for k, v in states[0].items()}
    model.load_state_dict(mean)
    return model, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("models", nargs="+")
    parser.add_argument("--weights", help="comma-separated, one per model (default: equal)")
    parser.add_argument("--valid-data", required=True, help="a prepared cache whose valid split sets the thresholds")
    args = parser.parse_args()
    weights = [float(w) for w in args.weights.split(",")] if args.weights else [1.0] * len(args.models)
    if len(weights) != len(args.models) or min(weights) < 0 or sum(weights) <= 0:
        raise SystemExit("average_models: --weights needs one non-negative weight per model")
    weights = [w / sum(weights) for w in weights]
    model, info = averaged(args.models, weights)
    cache = Cache(args.valid_data)
    clips = cache.indices("valid")
    tagger = Tagger(model, info, precision="fp32")
    scores = clip_scores(tagger, cache, clips, "calibrating thresholds")
    info.thresholds = [float(t) for t in metrics.f1_thresholds(cache.labels[clips], scores)]
    info.provenance = {**info.provenance, "source": "scripts/average_models.py",
                       "averaged": [{"model": p, "weight": round(w, 4)} for p, w in zip(args.models, weights)]}
    info.provenance.pop("created", None)
    out = checkpoint.save(args.out, model, info, overwrite=True)
    print(f"wrote {out}: the mean of {len(args.models)} models, thresholds from {len(clips)} valid clips")


if __name__ == "__main__":
    main()
