"""The General MIDI soundfonts renders may use, and which of them may be used for what.

Training renders use only fluid-soundfont-gm (MIT) and timgm6mb-soundfont (GPL-2); csound-soundfont (public domain)
is kept for the instrument evaluation set, so that the evaluation hears instruments the student was never trained on;
every other soundfont is kept aside like the held-out music packages (docs/corpus.md). The paths are where the Debian
packages install them; scripts/install-fluidsynth.sh installs all three.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import SampleCNNError

__all__ = ["Soundfont", "TRAINING", "EVALUATION", "by_package", "require"]


@dataclass(frozen=True)
class Soundfont:
    package: str     # the Debian package that installs it
    path: str
    licence: str     # from the package's debian/copyright
    copyright: str

    @property
    def name(self) -> str:
        return Path(self.path).name


TRAINING: tuple[Soundfont, ...] = (
    Soundfont("fluid-soundfont-gm", "/usr/share/sounds/sf2/FluidR3_GM.sf2", "MIT",
              "2000-2002, 2008 Frank Wen; 2008 Toby Smithe"),
    Soundfont("timgm6mb-soundfont", "/usr/share/sounds/sf2/TimGM6mb.sf2", "GPL-2", "2004 Tim Brechbill"),
)
EVALUATION: tuple[Soundfont, ...] = (
    Soundfont("csound-soundfont", "/usr/share/sounds/sf2/sf_GMbank.sf2", "public-domain",
              "none (the file has Public Domain in its license field)"),
)


def by_package(package: str) -> Soundfont:
    for sf in TRAINING + EVALUATION:
        if sf.package == package:
            return sf
    raise SampleCNNError(f"{package!r} is not a soundfont the corpus uses "
                         f"({', '.join(sf.package for sf in TRAINING + EVALUATION)})")


def require(soundfonts: tuple[Soundfont, ...]) -> None:
    """One line naming what to install when a soundfont or libfluidsynth is missing."""
    missing = [sf.package for sf in soundfonts if not Path(sf.path).is_file()]
    if missing:
        raise SampleCNNError(f"missing soundfont(s): apt-get install {' '.join(missing)} "
                             f"(or bash scripts/install-fluidsynth.sh)")
    try:
        import fluidsynth  # noqa: F401  (pyfluidsynth: loads libfluidsynth when imported)
    except ImportError as e:
        raise SampleCNNError(f"rendering MIDI needs pyfluidsynth and Debian's libfluidsynth3 ({e}): "
                             f"pip install 'samplecnn[corpus]' and apt-get install libfluidsynth3") from None
