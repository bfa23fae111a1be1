"""The beets plugin (beetsplug/samplecnn.py) on a real beets library in a temporary folder.

The library is made with beets' own Python API (Library, Item.from_path, lib.add) from files the tests write;
the plugin runs as users run it: `beet` (python -m beets) in a subprocess with a temporary config that says
`plugins: samplecnn`, so beets discovers the plugin in its `beetsplug` namespace package by itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import beets.library as beets_library
import numpy as np
import pytest
import soundfile as sf

from samplecnn import learn, packs

from test_packs import noisy, tonal, write_examples

ROOT = Path(__file__).resolve().parents[1]
SR = 22050


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    """A "tonal" tag pack for the default model, learned from 8 + 8 generated songs."""
    root = tmp_path_factory.mktemp("learn")
    pos, neg = write_examples(root / "pos", tonal, 8, start=20), write_examples(root / "neg", noisy, 8, start=20)
    learn.learn({"tonal": [str(pos)]}, [str(neg)], root / "tonal.json", say=lambda _: None)
    return root / "tonal.json"


def beet(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "BEETSDIR": str(home), "HOME": str(home),
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run([sys.executable, "-m", "beets", "-c", str(home / "config.yaml"), *args], env=env,
                          capture_output=True, text=True, timeout=300)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def make_home(tmp_path: Path, pack: Path | None, **plugin) -> Path:
    home = tmp_path / "beets"
    home.mkdir()
    lines = ["plugins: samplecnn", f"directory: {tmp_path / 'music'}", f"library: {home / 'library.db'}",
             "import:", "    write: no", "    copy: no"]
    settings = ([f"    tags: [{pack}]"] if pack else []) + [f"    {k}: {v}" for k, v in plugin.items()]
    lines += ["samplecnn:", *settings] if settings else []
    (home / "config.yaml").write_text("\n".join(lines) + "\n")
    return home


@pytest.fixture()
def library(tmp_path, pack):
    """A beets library of 3 tonal and 2 noisy songs (flac and mp3), added with beets' API."""
    from conftest import encode_audio

    home = make_home(tmp_path, pack)
    music = tmp_path / "music"
    files = []
    for i in range(3):
        files.append(music / f"tone{i}.flac")
        files[-1].parent.mkdir(parents=True, exist_ok=True)
        sf.write(files[-1], tonal(3.0, 60 + i), SR)
    files.append(music / "noise0.flac")
    sf.write(files[-1], noisy(3.0, 60), SR)
    files.append(encode_audio(music / "noise1.mp3", noisy(3.0, 61), SR, "libmp3lame"))
    lib = beets_library.Library(str(home / "library.db"), str(music))
    for f in files:
        item = beets_library.Item.from_path(str(f))
        item.title = f.stem
        lib.add(item)
    lib._close()
    return home, files


def items(home: Path) -> dict[str, dict]:
    """Every item's flexible attributes by title, read with beets' API (without the plugin: raw values)."""
    lib = beets_library.Library(str(home / "library.db"))
    try:
        return {it.title: {k: it[k] for k in it.keys() if k.startswith("samplecnn_")} for it in lib.items()}
    finally:
        lib._close()


def ls(home: Path, *query: str) -> list[str]:
    return sorted(beet(home, "ls", "-f", "$title", *query).stdout.split())


def test_tags_items_stores_attributes_queryable_and_skips_already_tagged(library):
    home, files = library
    done = beet(home, "samplecnn")
    assert "samplecnn: tagged 5 item(s)" in done.stdout, done.stdout + done.stderr
    stored = items(home)
    model_id = packs.model_id_of("default")
    for attrs in stored.values():
        assert attrs["samplecnn_model"] == model_id
        assert len([k for k in attrs if k not in ("samplecnn_model", "samplecnn_tags")]) == 51  # 50 + tonal
        assert 0 <= float(attrs["samplecnn_no_vocals"]) <= 1
    assert all("tonal" in stored[f"tone{i}"]["samplecnn_tags"].split("; ") for i in range(3))
    assert not any("tonal" in stored[t]["samplecnn_tags"].split("; ") for t in ("noise0", "noise1"))
    # the scores are samplecnn's own
    import samplecnn

    result = samplecnn.load().tag(files[0])
    assert float(stored["tone0"]["samplecnn_guitar"]) == pytest.approx(float(result.scores[0]), abs=1e-4)
    # queryable: a decided tag, a numeric score range, the model id
    assert ls(home, "samplecnn_tags:tonal") == ["tone0", "tone1", "tone2"]
    assert ls(home, "samplecnn_tonal:0.5..") == ["tone0", "tone1", "tone2"]
    assert ls(home, "samplecnn_tonal:..0.5") == ["noise0", "noise1"]
    assert len(ls(home, f"samplecnn_model:{model_id}")) == 5
    # a rerun skips them all; --force tags them again
    done = beet(home, "samplecnn")
    assert f"tagged 0 item(s), 5 already tagged by {model_id} (--force re-tags them)" in done.stdout
    done = beet(home, "samplecnn", "-f", "title:tone0")
    assert "samplecnn: tagged 1 item(s)" in done.stdout and "already" not in done.stdout
    # not written into the files unless asked
    from mutagen.flac import FLAC

    assert "samplecnn_tags" not in FLAC(files[0])


def test_a_new_pack_tags_the_items_again_and_a_missing_file_is_one_line(library, tmp_path):
    home, files = library
    (tmp_path / "notes.json").write_text("{}")
    done = beet(home, "samplecnn", "-t", str(tmp_path / "notes.json"), check=False)  # not a pack: refused
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert f"error: samplecnn: {tmp_path / 'notes.json'}: not a tag pack" in done.stderr
    assert items(home)["tone0"] == {}  # nothing was tagged
    files[1].unlink()                                  # tone1: gone
    files[3].write_bytes(b"not audio any more" * 100)  # noise0: not audio
    done = beet(home, "samplecnn")
    assert "samplecnn: tagged 3 item(s), 2 failed" in done.stdout
    errors = [line for line in done.stderr.splitlines() if "samplecnn" in line]
    assert len(errors) == 2, done.stderr
    assert any(str(files[1]) in e and "no such file" in e for e in errors)
    assert any(str(files[3]) in e for e in errors) and "Traceback" not in done.stderr
    stored = items(home)
    assert stored["tone1"] == {} and stored["noise0"] == {} and stored["tone2"]["samplecnn_model"]


def test_write_puts_the_decided_tags_into_the_files_through_beets(library):
    home, files = library
    before = [sf.read(f)[0] if f.suffix == ".flac" else None for f in files]
    beet(home, "samplecnn", "-w")
    from mutagen import File

    stored = items(home)
    for f in files:
        written = File(f)
        title = f.stem
        expected = [t for t in stored[title]["samplecnn_tags"].split("; ") if t]
        if f.suffix == ".flac":
            assert written.get("samplecnn_tags", []) == expected
        else:
            frame = written.tags.getall("TXXX:SAMPLECNN_TAGS")
            assert (list(frame[0].text) if frame else []) == expected
    assert "tonal" in File(files[0])["samplecnn_tags"]
    for f, audio in zip(files, before):  # the audio is untouched
        if audio is not None:
            np.testing.assert_array_equal(sf.read(f)[0], audio)


def test_auto_tags_on_import(tmp_path, pack):
    home = make_home(tmp_path, pack, auto="yes")
    incoming = write_examples(tmp_path / "incoming", tonal, 2, start=80, ext="flac")
    from mutagen.flac import FLAC

    for f in incoming.iterdir():  # titled, or beets takes the second untitled song for a duplicate of the first
        tags = FLAC(f)
        tags["title"] = f.stem
        tags.save()
    done = beet(home, "import", "-A", "-q", "-s", str(incoming))
    assert "Traceback" not in done.stderr
    stored = items(home)
    assert sorted(stored) == ["tonal80", "tonal81"]
    assert all(a["samplecnn_model"] == packs.model_id_of("default") for a in stored.values())
    assert all("tonal" in a["samplecnn_tags"].split("; ") for a in stored.values())


def test_the_plugin_loads_without_importing_torch(tmp_path):
    home = make_home(tmp_path, None)
    env = {**os.environ, "BEETSDIR": str(home), "HOME": str(home),
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    script = (f"import sys, beets.ui\nbeets.ui._raw_main(['-c', {str(home / 'config.yaml')!r}, 'ls'])\n"
              "import beets.plugins\nassert [p.name for p in beets.plugins.find_plugins()] == ['samplecnn']\n"
              "print('torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"
