"""Print a markdown table of the student's and the teacher's top tags, side by side, for a few tracks (model card).

    .venv/bin/python scripts/compare_teacher.py [--model default] [--top 5] FILE...

The teacher is the mean of musicnn's MTT_musicnn and MTT_vgg (what `samplecnn teach --teacher both` distils); both
taggers average their segment (patch) outputs over the whole track.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import samplecnn
from samplecnn.teachers.musicnn import load_teacher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+")
    parser.add_argument("--model", default="default")
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args()

    student = samplecnn.load(args.model)
    teachers = [load_teacher("MTT_musicnn"), load_teacher("MTT_vgg")]
    print("| track | student (samplecnn) | teacher (musicnn + vgg) |")
    print("|---|---|---|")
    for path in args.files:
        ours = student.tag(path)
        theirs = np.mean([t.tag(path).scores for t in teachers], axis=0)
        teacher_tags = teachers[0].tags if hasattr(teachers[0], "tags") else ours.tags
        top_teacher = [(teacher_tags[i], theirs[i]) for i in np.argsort(-theirs)[: args.top]]
        fmt = lambda pairs: ", ".join(f"{tag} {score:.2f}" for tag, score in pairs)  # noqa: E731
        print(f"| {Path(path).name} | {fmt(ours.top(args.top))} | {fmt(top_teacher)} |")


if __name__ == "__main__":
    main()
