"""Do the student's vocal-tag scores follow the teacher's when a voice is mixed over music neither was trained on?

    .venv/bin/python scripts/eval_voices.py --music VALID_CACHE --voices VOICES_CACHE [--model default] [--n 512]

Mixtures are built the way training builds its voice views (samplecnn.views, p_voice = 1, no other augmentation):
a window from the valid split of --music (the held-out packages) with voices from the valid split of --voices
(held-out speakers) at -6..+12 dB relative to the music. The teacher (mean of MTT_musicnn and MTT_vgg) labels the
teacher window; the student scores the 59049-sample crop inside it. Printed: per vocal tag, the Spearman
correlation between the student's and the teacher's scores over the mixtures and the same windows without the
voice (so a tag that only follows the music is not credited), and their mean (the mixtures' row is the number the
model card reports).
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch
from scipy.stats import spearmanr

from samplecnn import checkpoint, pretrained
from samplecnn.data import Cache
from samplecnn.teach import tag_columns
from samplecnn.teachers.ensemble import TeacherEnsemble
from samplecnn.views import Augment, ViewSampler

VOCAL_TAGS = ("vocal", "vocals", "voice", "singing", "male", "female", "man", "woman", "male vocal", "female vocal",
              "male voice", "female voice", "choir", "choral", "opera", "no vocal", "no vocals", "no voice")


def scores(sampler: ViewSampler, n: int, model, teacher: TeacherEnsemble, batch: int = 16):
    """(student, teacher) scores, each (n, tags), of the sampler's first n views."""
    student, taught = [], []
    for step in range(0, n // batch):
        crops, windows = sampler.batch(step, batch)
        with torch.inference_mode():
            student.append(torch.sigmoid(model(torch.from_numpy(crops)[:, None, :])).numpy())
        taught.append(teacher.probabilities(torch.from_numpy(windows)).numpy())
    return np.concatenate(student), np.concatenate(taught)


def correlations(rows: dict[str, tuple[np.ndarray, np.ndarray]], tags: list[str], vocabulary: list[str]):
    """{tag: {row name: Spearman rho of the student's against the teacher's scores}} for the `tags` in
    `vocabulary` (the score columns), in the order of `tags`."""
    return {tag: {name: float(spearmanr(s[:, vocabulary.index(tag)], t[:, vocabulary.index(tag)]).statistic)
                  for name, (s, t) in rows.items()}
            for tag in tags if tag in vocabulary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--music", required=True, help="a cache whose valid split is held-out music")
    parser.add_argument("--voices", required=True, help="a cache from `samplecnn corpus voices` (valid split used)")
    parser.add_argument("--model", default="default")
    parser.add_argument("--n", type=int, default=512, help="mixtures (a multiple of 16)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model, info = checkpoint.read(pretrained.checkpoint_path(args.model))
    music, voices = Cache(args.music), Cache(args.voices)
    teacher = TeacherEnsemble(("MTT_musicnn", "MTT_vgg"), tag_columns(list(info.tags)))
    plain = Augment.none()
    clips = music.indices("valid")
    rows = {}
    for name, augment in (("with a voice", dataclasses.replace(plain, p_voice=1.0)), ("without", plain)):
        # the same seed draws the same music windows (the voice draws come after them in each row's generator)
        sampler = ViewSampler(music, clips, args.seed, augment, voices=voices, voice_split="valid")
        rows[name] = scores(sampler, args.n, model, teacher)
    vocabulary = list(info.tags)
    n_voices = len(voices.indices("valid"))
    print(f"model {args.model}; {args.n} windows of {len(clips)} held-out tracks; {n_voices} held-out voice clips\n")
    print("| tag | " + " | ".join(f"Spearman {k}" for k in rows) + " | teacher mean with / without |")
    print("|---|" + "---|" * len(rows) + "---|")
    table = correlations(rows, list(VOCAL_TAGS), vocabulary)
    for tag, rhos in table.items():
        j = vocabulary.index(tag)
        t_with, t_without = rows["with a voice"][1][:, j].mean(), rows["without"][1][:, j].mean()
        cells = " | ".join(f"{rho:.3f}" for rho in rhos.values())
        print(f"| {tag} | {cells} | {t_with:.3f} / {t_without:.3f} |")
    means = [np.nanmean([rhos[k] for rhos in table.values()]) for k in rows]
    print("| **mean** | " + " | ".join(f"**{m:.3f}**" for m in means) + " | |")


if __name__ == "__main__":
    main()
