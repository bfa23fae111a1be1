"""How often the student's top tag is the teacher's on sonic-pi-samples' loops (Debian; mostly CC0), loop by loop.

    .venv/bin/python scripts/eval_loops.py [--model default] [--cache DIR]

The .deb is fetched once with `apt-get download` and unpacked with `dpkg-deb -x` (no root) into the cache folder
(default ~/.cache/samplecnn/sonic-pi-samples); only usr/share/sonic-pi/samples/loop_*.flac and the package's
copyright file are kept. The teacher is the mean of MTT_musicnn and MTT_vgg, what `samplecnn teach --teacher both`
distils. Prints a markdown table (loop, licence, both top-1 tags, agreement) and the share of loops that agree.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

PACKAGE = "sonic-pi-samples"
SAMPLES = "usr/share/sonic-pi/samples"


def fetch(cache: Path) -> tuple[list[Path], Path]:
    """(loop files, copyright file) in `cache`, fetching and unpacking the package the first time."""
    from samplecnn.corpus import debs

    loops = sorted((cache / "loops").glob("loop_*.flac"))
    copyright = cache / "copyright"
    if loops and copyright.is_file():
        return loops, copyright
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tmp-", dir=cache) as tmp:
        tmp = Path(tmp)
        deb = debs.download(PACKAGE, tmp)
        debs.extract(deb, tmp / "root")
        staging = tmp / "loops"
        staging.mkdir()
        for src in sorted((tmp / "root" / SAMPLES).glob("loop_*.flac")):
            shutil.copyfile(src, staging / src.name)
        shutil.copyfile(tmp / "root" / "usr/share/doc" / PACKAGE / "copyright", tmp / "copyright")
        shutil.rmtree(cache / "loops", ignore_errors=True)
        (tmp / "loops").rename(cache / "loops")
        (tmp / "copyright").replace(copyright)
    return sorted((cache / "loops").glob("loop_*.flac")), copyright


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="registered name or checkpoint path (default: default)")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "samplecnn" / PACKAGE)
    args = parser.parse_args()

    import samplecnn
    from samplecnn.corpus import dep5
    from samplecnn.errors import SampleCNNError
    from samplecnn.teachers.musicnn import load_teacher

    try:
        loops, copyright_file = fetch(args.cache)
    except SampleCNNError as e:
        sys.exit(f"eval_loops: {e}")
    licences = dep5.read(copyright_file)
    student = samplecnn.load(args.model)
    teachers = [load_teacher("MTT_musicnn"), load_teacher("MTT_vgg")]
    print(f"| loop | licence | student ({args.model}) top-1 | teacher (musicnn + vgg) top-1 | same |")
    print("|---|---|---|---|---|")
    agree = 0
    for path in loops:
        ours = student.tag(path)
        theirs = np.mean([t.tag(path).scores for t in teachers], axis=0)
        s_tag, s_score = ours.top(1)[0]
        t_idx = int(np.argmax(theirs))
        t_tag = teachers[0].tags[t_idx]
        same = s_tag == t_tag
        agree += same
        lic = licences.licence_for(f"etc/samples/{path.name}").name if licences else "unknown"
        print(f"| {path.stem} | {lic} | {s_tag} {s_score:.2f} | {t_tag} {theirs[t_idx]:.2f} | "
              f"{'yes' if same else 'no'} |")
    print(f"\nstudent top-1 = teacher top-1 on {agree} of {len(loops)} loops ({agree / max(1, len(loops)):.0%})")


if __name__ == "__main__":
    main()
