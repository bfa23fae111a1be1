"""Which Debian packages make the training corpus, which of their files are music, and which go to validation.

The package list is fixed (docs/corpus.md): every one is a game soundtrack whose debian/copyright names a free licence,
checked by hand. Any other package is refused, so a corpus built by this recipe is always the same set of sources.

A rule selects music by path; the recipe then also requires >= --min-seconds (default 30) of decoded audio, which
drops the jingles and loops that sit in the same folders. Paths use debian/copyright's glob syntax (dep5.match:
`*` also crosses `/`), and a member of a zip archive is written `ARCHIVE!MEMBER`.

`source_root` maps an installed prefix to the prefix the same files have in the upstream source tree, which is what
debian/copyright's `Files:` patterns are written against (supertux-data installs `data/music/x.ogg` as
`usr/share/games/supertux2/music/x.ogg`). It is set only where a per-file stanza touches the audio and the mapping was
checked against the package; elsewhere only `Files: *` can match, whatever the prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SampleCNNError
from .dep5 import match

__all__ = ["Rule", "RULES", "DEFAULT_PACKAGES", "VALID_PACKAGES", "rule_for", "split_of", "select"]


@dataclass(frozen=True)
class Rule:
    music: tuple[str, ...]                   # globs over paths in the package: these files are music
    source_root: tuple[str, str] = ("", "")  # (installed prefix, upstream prefix) for debian/copyright's patterns
    archives: tuple[str, ...] = ()           # zip files (Quake-style .pk3) whose members are candidates too

    def is_music(self, original: str) -> bool:
        return any(match(p, original) for p in self.music)

    def is_archive(self, path: str) -> bool:
        return any(match(p, path) for p in self.archives)

    def source_path(self, original: str) -> str:
        """The path debian/copyright speaks of. An archive's members overlay the folder it sits in, as a .pk3's do
        in the game (base/0music.pk3!music/x.ogg is base/music/x.ogg)."""
        if "!" in original:
            archive, member = original.split("!", 1)
            original = archive.rsplit("/", 1)[0] + "/" + member if "/" in archive else member
        installed, upstream = self.source_root
        if installed and original.startswith(installed):
            return upstream + original[len(installed):]
        return original


_STK = "usr/share/games/supertuxkart/data/"

# In the order of the shared notes; this order also decides which copy of a cross-package duplicate is kept.
RULES: dict[str, Rule] = {
    "ufoai-music": Rule(("usr/share/games/ufoai/base/*.pk3!music/*",), ("usr/share/games/ufoai/", ""),
                        archives=("usr/share/games/ufoai/base/*.pk3",)),
    "warzone2100-music": Rule(("usr/share/games/warzone2100/music/*",)),
    "planetblupi-music-ogg": Rule(("usr/share/planetblupi/music/*",)),
    "supertux-data": Rule(("usr/share/games/supertux2/music/*",), ("usr/share/games/supertux2/", "data/")),
    "hedgewars-data": Rule(("usr/share/games/hedgewars/Data/Music/*",),
                           ("usr/share/games/hedgewars/", "share/hedgewars/")),
    "colobot-common-sounds": Rule(("usr/share/games/colobot/music/*",)),
    # data/music/ plus the four track folders whose .ogg has its own .music descriptor (the game's mark of music);
    # the other .ogg files beside the tracks and in sfx/ are effects, ambiences and speech, some longer than 30 s
    "supertuxkart-data": Rule((
        _STK + "music/*",
        _STK + "tracks/ancient_colosseum_labyrinth/Battle_Theme_1.ogg",
        _STK + "tracks/battleisland/Gran_Paradiso_Unused_-_TuxKart_5a_Gowns_Bow_Remix.ogg",
        _STK + "tracks/cave/beneath_the_rabbit_hole.ogg",
        _STK + "tracks/introcutscene2/intro2.ogg",
    ), ("usr/share/games/supertuxkart/", "")),
    # base/titles/*.ogg and storyline/*/titles/*.ogg are narrated title screens, not music
    "freedroidrpg-data": Rule(("usr/share/freedroidrpg/data/sound/music/*",)),
    # audio/ holds the files; the per-language folders de/ en/ es/ fr/ it/ only hold links to them
    "drascula-music": Rule(("usr/share/scummvm/drascula/audio/*",)),
    "hyperrogue-music": Rule(("usr/share/hyperrogue/music/*",), ("usr/share/hyperrogue/", "")),
    "flare-game": Rule(("usr/share/games/flare/mods/*/music/*",)),
    "asc-music": Rule(("usr/share/games/asc/music/*",)),
    # snd/ mixes the three tunes (*zik*: introzik, frozen-mainzik-1p/2p) with short effects
    "frozen-bubble-data": Rule(("usr/share/games/frozen-bubble/snd/*zik*",)),
    "lincity-ng-data": Rule(("usr/share/games/lincity-ng/music/*",)),
    "extremetuxracer-data": Rule(("usr/share/games/etr/music/*",)),
}

DEFAULT_PACKAGES: tuple[str, ...] = tuple(RULES)

# Held out for validation: ~2.4 h of ~19.5 h (12%). Their composers (hedgewars: Jonatan Nilsson, Valentin
# Kraevskiy, HSR, John Dum, yd, Kevin MacLeod; freedroidrpg: Nario Hagman, Arvid Picciani, 4t thieves, realsmokers,
# stud, girix8, pekpek) appear in no other package's credits or copyright. colobot was not chosen: the same studio
# (EPSITEC) made planetblupi.
VALID_PACKAGES = frozenset({"hedgewars-data", "freedroidrpg-data"})


def rule_for(package: str) -> Rule:
    try:
        return RULES[package]
    except KeyError:
        raise SampleCNNError(f"{package!r} is not one of the corpus packages ({', '.join(RULES)})") from None


def split_of(package: str) -> str:
    return "valid" if package in VALID_PACKAGES else "train"


def select(names: list[str] | None) -> list[str]:
    """The packages to build, in the canonical order whatever order they were given in; unknown names refused."""
    if not names:
        return list(DEFAULT_PACKAGES)
    unknown = [n for n in names if n not in RULES]
    if unknown:
        raise SampleCNNError(f"not in the corpus recipe: {', '.join(unknown)} (it uses only {', '.join(RULES)})")
    return [n for n in DEFAULT_PACKAGES if n in set(names)]
