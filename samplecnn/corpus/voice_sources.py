"""Which Debian packages give the voice corpus, which of their files are human voice, and what each file says.

The list is fixed: the Tier 1 sources of docs/voices.md plus three choir samples, all checked by hand (clean free
licences, real recordings, 16 kHz or better apart from a few of KTuberling's). Any other package is refused, and so
are the reserved ones (hedgewars-data, freedroidrpg-data, every *-music package) should anyone add them: the music
corpus holds its validation music there, and a voice corpus must not carry it in through the back door.

A source selects voice by path (debian/copyright's glob syntax: `*` also crosses `/`) and leaves out, by path, the
non-voice files that sit in the same folders (Asterisk's beeps and tones). Its labels (language, gender, speaker)
come from file and folder names, as the survey found them, and are computed when the tables are written, like the
split: changing them needs no re-extraction.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from ..errors import SampleCNNError
from .dep5 import match

__all__ = ["Source", "SOURCES", "DEFAULT_PACKAGES", "VALID_PACKAGES", "RESERVED", "Labels", "labels", "split_of",
           "select", "source_for"]


@dataclass(frozen=True)
class Source:
    take: tuple[str, ...]                    # globs over paths in the package: these files are voice
    leave: tuple[str, ...] = ()              # globs matched inside `take` that are not voice (tones, beeps)
    kind: str = "speech"                     # speech | choir
    source_root: tuple[str, str] = ("", "")  # (installed prefix, upstream prefix) for debian/copyright's patterns
    # for a debian/copyright that is not machine-readable: (licence, holders, a phrase the file must contain for
    # the licence to be taken; read by hand, re-checked against every build's file so a changed text gives unknown)
    fallback: tuple[str, str, str] | None = None

    def is_voice(self, original: str) -> bool:
        return any(match(p, original) for p in self.take) and not any(match(p, original) for p in self.leave)

    def source_path(self, original: str) -> str:
        installed, upstream = self.source_root
        if installed and original.startswith(installed):
            return upstream + original[len(installed):]
        return original


_AST = "usr/share/asterisk/sounds/"
# beeps, tones, the silence/ folder (also caught by the level check) and tt-monkeys (the easter egg's screeching
# monkeys, not a human voice) of every Asterisk language
_AST_LEAVE = ("*/beep.g722", "*/beeperr.g722", "*-2tone.g722", "*/silence/*", "*/tt-monkeys.g722")
_FILLETS = "usr/share/games/fillets-ng/sound/*/{lang}/*.ogg"
# debian/copyright of fillets-ng-data-* is free text: "GNU General Public License ... version 2 dated June, 1991",
# and the holders are its "Upstream Authors"
_FILLETS_AUTHORS = ("Ivo Danihelka; Pavel Danihelka; ALTAR interactive; Frederic Panico; Ronny Standtke; "
                    "Simone Cociancich; Przemek Bojczuk")
_FILLETS_GPL = ("GPL-2", _FILLETS_AUTHORS, "version 2 dated June, 1991")


def _asterisk(lang: str, folder: str) -> Source:
    # the Files: stanzas are per language component of the source package (`fr-*`, `it-*`, `ru-*`); `*` is
    # Allison Smith's CC-BY-SA-3.0, which must not be given to the other voices
    return Source((f"{_AST}{folder}/*.g722",), _AST_LEAVE, source_root=(f"{_AST}{folder}/", f"{lang}-g722/"))


# In the order of docs/voices.md; this order also decides which copy of a cross-package duplicate is kept.
SOURCES: dict[str, Source] = {
    # <stamp>_desc_<lang>.ogg (and a few .wav) are the spoken descriptions; <stamp>.ogg is the stamp's sound effect
    "tuxpaint-stamps-default": Source(tuple(f"usr/share/tuxpaint/stamps/*{p}" for p in (
        "_desc.ogg", "_desc_*.ogg", "_desc.wav", "_desc_*.wav"))),
    "fillets-ng-data-cs": Source((_FILLETS.format(lang="cs"),), fallback=_FILLETS_GPL),
    "fillets-ng-data-nl": Source((_FILLETS.format(lang="nl"),), fallback=_FILLETS_GPL),
    "festvox-ru": Source(("usr/share/festival/voices/russian/msu_ru_nsh_clunits/wav/*.wav",)),
    "asterisk-core-sounds-en-g722": _asterisk("en", "en_US_f_Allison"),
    "asterisk-core-sounds-es-g722": _asterisk("es", "es_MX_f_Allison"),
    "asterisk-core-sounds-fr-g722": _asterisk("fr", "fr_CA_f_June"),
    "asterisk-core-sounds-it-g722": _asterisk("it", "it_IT_m_Carlo"),
    "asterisk-core-sounds-ru-g722": _asterisk("ru", "ru_RU_f_IvrvoiceRU"),
    "klettres-data": Source(("usr/share/klettres/*/alpha/*.ogg", "usr/share/klettres/*/syllab/*.ogg")),
    "ktuberling-data": Source(("usr/share/ktuberling/sounds/*/*.ogg", "usr/share/ktuberling/sounds/*/*.wav",
                               "usr/share/ktuberling/sounds/*/*.opus")),
    # choir seeds: Sonic Pi's CC0 ambi_choir (per-file stanza under etc/samples/) and LMMS's two chorus pads
    "sonic-pi-samples": Source(("usr/share/sonic-pi/samples/ambi_choir.flac",), kind="choir",
                               source_root=("usr/share/sonic-pi/", "etc/")),
    "lmms-common": Source(("usr/share/lmms/samples/stringsnpads/chorus01.ogg",
                           "usr/share/lmms/samples/stringsnpads/chorus02.ogg"), kind="choir"),
}

DEFAULT_PACKAGES: tuple[str, ...] = tuple(SOURCES)

# Held out for validation, whole packages, so that held-out mixtures carry voices the student never heard:
# - fillets-ng-data-nl: the Dutch dub's actors (both fish: female and male) are in no other package;
# - asterisk-core-sounds-fr-g722: June Wallack, who records nothing else here. Not en or es: both are Allison
#   Smith, so holding out one would leave her voice in train; not it: Carlo Flora is one of only three male voices.
VALID_PACKAGES = frozenset({"fillets-ng-data-nl", "asterisk-core-sounds-fr-g722"})

# never taken, whatever is asked: the music corpus's validation packages and every music package
RESERVED = ("hedgewars-data", "freedroidrpg-data", "*-music", "*-music-*")


@dataclass(frozen=True)
class Labels:
    lang: str     # language code as the source writes it (en, pt_BR, en_US); zxx = no language (choir)
    gender: str   # female | male | unknown
    speaker: str  # a name for one voice where the source tells it (all its lines share it), else ""


_FISH = {"m": ("female", "small fish"), "v": ("male", "big fish")}
_GENDER = {"f": "female", "m": "male"}


def labels(package: str, original: str) -> Labels:
    """Language, gender and speaker of one file, from its path alone."""
    name = posixpath.basename(original)
    stem = posixpath.splitext(name)[0]
    parts = original.split("/")
    if package == "tuxpaint-stamps-default":
        m = re.search(r"_desc(?:_([A-Za-z]{2,3}(?:_[A-Z]{2})?))?$", stem)
        return Labels((m.group(1) if m and m.group(1) else "en"), "unknown", "")
    if package.startswith("fillets-ng-data-"):
        lang = parts[-2]
        # <level>-<character>-<line>.ogg: m is the small (female) fish, v the big (male) one, the rest other parts
        codes = stem.split("-")[1:]
        for code, (gender, who) in _FISH.items():
            if code in codes:
                return Labels(lang, gender, f"fillets-{lang} {who}")
        return Labels(lang, "unknown", "")
    if package == "festvox-ru":
        return Labels("ru", "male", "msu_ru_nsh")  # "Russian male speaker for Festival" (package description)
    if package.startswith("asterisk-core-sounds-"):
        folder = parts[len(_AST.split("/")) - 1]  # ll_CC_<f|m>_<Name>
        lang, region, gender, name = folder.split("_", 3)
        return Labels(f"{lang}_{region}", _GENDER.get(gender, "unknown"), name)
    if package == "klettres-data":
        return Labels(parts[3], "unknown", "")
    if package == "ktuberling-data":
        return Labels(parts[4], "unknown", "")
    return Labels("zxx", "unknown", "")


def split_of(package: str) -> str:
    return "valid" if package in VALID_PACKAGES else "train"


def source_for(package: str) -> Source:
    try:
        return SOURCES[package]
    except KeyError:
        raise SampleCNNError(f"{package!r} is not one of the voice packages ({', '.join(SOURCES)})") from None


def select(names: list[str] | None) -> list[str]:
    """The packages to build, in the canonical order; reserved and unknown names refused."""
    if not names:
        return list(DEFAULT_PACKAGES)
    reserved = [n for n in names if any(match(p, n) for p in RESERVED)]
    if reserved:
        raise SampleCNNError(f"reserved, never used for voices: {', '.join(reserved)} (music and the music corpus's "
                             f"validation packages)")
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        raise SampleCNNError(f"not in the voice recipe: {', '.join(unknown)} (it uses only {', '.join(SOURCES)})")
    return [n for n in DEFAULT_PACKAGES if n in set(names)]
