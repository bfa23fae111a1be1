"""The command line as a user meets it: output formats, taggram pictures, and one-line errors for bad input."""

import csv
import io
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from samplecnn.cli import main

from conftest import SR, music_like


@pytest.fixture()
def songs(tmp_path):
    folder = tmp_path / "music"
    (folder / "album").mkdir(parents=True)
    sf.write(folder / "a.wav", music_like(6.0, seed=1), SR)
    sf.write(folder / "album" / "b.flac", music_like(3.0, sr=44100, channels=2, seed=2), 44100)
    (folder / "cover.jpg").write_bytes(b"\xff\xd8\xff\xe0 not audio")  # not picked up by the folder walk
    return folder


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_table_output_lists_top_tags_per_song(capsys, songs, ckpt_path):
    code, out, err = run(capsys, "tag", songs, "--model", ckpt_path, "--top-k", "3")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(str(songs / "a.wav")) and "(6.0 s, 2 segments)" in lines[0]
    assert any(line.startswith(str(songs / "album" / "b.flac")) for line in lines)
    score_lines = [line for line in lines if line.startswith("  ") and not line.startswith("  decisions")]
    assert len(score_lines) == 6
    assert "Traceback" not in err


def test_json_jsonl_and_csv_agree(capsys, songs, ckpt_path):
    _, out, _ = run(capsys, "tag", songs / "a.wav", "--model", ckpt_path, "--format", "json")
    (doc,) = json.loads(out)
    assert doc["path"].endswith("a.wav") and doc["segments"] == 2 and len(doc["taggram"]) == 2
    assert len(doc["scores"]) == 50 and doc["model"] == "samplecnn"
    _, out, _ = run(capsys, "tag", songs / "a.wav", "--model", ckpt_path, "--format", "jsonl")
    assert json.loads(out.strip())["scores"] == doc["scores"]
    _, out, _ = run(capsys, "tag", songs / "a.wav", "--model", ckpt_path, "--format", "csv", "--top-k", "0")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 50 and [int(r["rank"]) for r in rows] == list(range(1, 51))
    assert rows[0]["tag"] == doc["top"][0]["tag"]
    assert float(rows[0]["score"]) == pytest.approx(doc["top"][0]["score"], abs=1e-4)


def test_taggram_png_for_one_file_and_a_folder_of_them_for_many(capsys, songs, ckpt_path, tmp_path):
    out_png = tmp_path / "taggram.png"
    code, _, err = run(capsys, "tag", songs / "a.wav", "--model", ckpt_path, "--taggram", out_png)
    assert code == 0, err
    data = out_png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 800 and height > 800  # 50 readable tag rows
    code, _, err = run(capsys, "tag", songs / "a.wav", "--model", ckpt_path, "--taggram", out_png)
    assert code == 1 and "already exists" in err  # never overwrites silently
    code, _, err = run(capsys, "tag", songs, "--model", ckpt_path, "--taggram", tmp_path / "pngs")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "pngs").iterdir()) == ["0000_a.png", "0001_b.png"]


def test_a_folder_is_tagged_as_each_of_its_files_is_alone(capsys, songs, ckpt_path):
    sf.write(songs / "c.wav", music_like(9.0, seed=3), SR)
    for hop in ([], ["--hop", "1.5"]):
        code, out, err = run(capsys, "tag", songs, "--model", ckpt_path, "--format", "jsonl", *hop)
        assert code == 0, err
        together = [json.loads(line) for line in out.splitlines()]
        assert [d["path"] for d in together] == [str(songs / "a.wav"), str(songs / "album" / "b.flac"),
                                                 str(songs / "c.wav")]  # the order given, whatever finished first
        for doc in together:
            _, out, _ = run(capsys, "tag", doc["path"], "--model", ckpt_path, "--format", "jsonl", *hop)
            alone = json.loads(out)
            assert doc["segments"] == alone["segments"] and doc["duration"] == alone["duration"]
            # other batch compositions: the last bits only
            assert np.abs(np.array(doc["taggram"]) - np.array(alone["taggram"])).max() <= 2e-4


def test_bad_inputs_each_get_one_line_and_the_batch_goes_on(capsys, songs, ckpt_path, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.mp3").write_bytes(b"")
    (bad / "notes.mp3").write_text("these are my notes, not a song\n" * 50)
    sf.write(bad / "silent.wav", np.zeros(SR * 3, np.float32), SR)
    sf.write(bad / "zero.wav", np.zeros(0, np.float32), SR)
    nan = music_like(3.0)
    nan[1000] = np.nan
    sf.write(bad / "nan.wav", nan, SR, subtype="FLOAT")
    good = music_like(4.0)
    sf.write(bad / "good.wav", good, SR)
    data = (bad / "good.wav").read_bytes()
    (bad / "trunc.flac").write_bytes(b"fLaC" + data[4:40])
    (tmp_path / "nothing_here").mkdir()

    code, out, err = run(capsys, "tag", bad, tmp_path / "missing.mp3", tmp_path / "nothing_here",
                         "--model", ckpt_path, "--format", "jsonl")
    assert code == 1
    assert [json.loads(line)["path"] for line in out.splitlines()] == [str(bad / "good.wav")]
    assert "Traceback" not in err
    summary = err.split("input(s) failed:\n")[1]  # the report after the progress bar
    problems = [line.strip() for line in summary.splitlines()]
    expected = {"empty.mp3": "", "notes.mp3": "not an audio file", "silent.wav": "silent",
                "zero.wav": "no audio", "nan.wav": "NaN", "trunc.flac": "", "missing.mp3": "no such file",
                "nothing_here": "no audio files"}
    assert len(problems) == len(expected)
    for name, reason in expected.items():
        (line,) = [p for p in problems if name in p]
        assert reason in line
    assert "8 of 9 input(s) failed" in err


def test_models_info_and_init(capsys, tmp_path):
    code, out, _ = run(capsys, "models")
    assert code == 0 and out.startswith("default ") and "musicnn" in out
    path = tmp_path / "rese.safetensors"
    code, out, _ = run(capsys, "init", "rese2", path, "--multi-level", "--tags", "kick,snare,hat")
    assert code == 0 and path.is_file()
    code, out, _ = run(capsys, "info", path)
    assert code == 0
    assert "architecture rese2" in out and "multi_level=True" in out and "kick, snare, hat" in out
    code, out, _ = run(capsys, "info", path, "--json")
    assert json.loads(out)["tags"] == ["kick", "snare", "hat"]
    code, out, _ = run(capsys, "info", "default")  # a registered name works wherever a checkpoint path does
    assert code == 0 and "architecture samplecnn" in out and "1,869,874 trainable" in out
    code, _, err = run(capsys, "init", "rese2", path)
    assert code == 1 and "already exists" in err
    code, _, err = run(capsys, "init", "transformer", tmp_path / "x.safetensors")
    assert code == 1 and "unknown architecture" in err
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    code, _, err = run(capsys, "info", tmp_path / "junk.safetensors")
    assert code == 1 and "not a samplecnn checkpoint" in err and "Traceback" not in err


def test_console_script_runs_as_a_program(songs, ckpt_path):
    proc = subprocess.run([sys.executable, "-m", "samplecnn", "tag", songs / "a.wav", "--model", ckpt_path,
                           "--format", "json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["segments"] == 2
    proc = subprocess.run([sys.executable, "-m", "samplecnn", "tag", songs / "missing.ogg", "--model", ckpt_path],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 2 and "Traceback" not in proc.stderr


def test_a_bad_device_is_one_line_not_a_traceback(capsys, songs, ckpt_path):
    code, _, err = run(capsys, "tag", songs / "a.wav", "--model", ckpt_path, "--device", "bogus")
    assert code == 1 and "unknown device 'bogus'" in err and len(err.strip().splitlines()) == 1
    if not torch.cuda.is_available():
        code, _, err = run(capsys, "tag", songs / "a.wav", "--model", ckpt_path, "--device", "cuda")
        assert code == 1 and "no CUDA GPU is available here" in err and "Traceback" not in err


def _helps():
    """Every (sub)command's parser, by name (prepare's and corpus's sub-subcommands included)."""
    import argparse

    from samplecnn.cli import _parser

    def walk(parser, name):
        yield name, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    yield from walk(sub, f"{name} {sub_name}".strip())

    return dict(walk(_parser(), ""))


def test_shared_options_have_one_wording_and_one_meaning():
    from samplecnn import commandline

    parsers = _helps()
    devices, forces, models = {}, {}, {}
    for name, parser in parsers.items():
        for action in parser._actions:
            if "--device" in action.option_strings:
                devices[name] = action.help
            if "--force" in action.option_strings and action.help != "==SUPPRESS==":
                forces[name] = action.help
            if "--model" in action.option_strings:
                models[name] = (action.dest, action.help)
    assert set(devices) >= {"tag", "index", "similar", "serve", "evaluate", "train"}
    assert set(devices.values()) == {commandline.DEVICE_HELP}
    assert all(h.startswith("overwrite ") for h in forces.values()), forces  # --force: overwrite outputs
    assert set(forces) >= {"tag", "init", "import-keras", "export", "export-onnx", "prepare mtat", "teach"}
    assert "corpus debian" not in forces  # there it meant "redo": --redo, --force a hidden alias
    for name in ("tag", "index", "serve", "similar"):
        assert models[name][0] == "model" and "checkpoint" in models[name][1]
    for name in ("search", "export", "write-tags"):
        assert models[name][0] == "model_id" and "deprecated" in models[name][1]


def test_corpus_redo_keeps_force_as_its_old_spelling():
    from samplecnn.cli import _parser

    for flag in ("--redo", "--force"):
        args = _parser().parse_args(["corpus", "debian", "--out", "x", flag])
        assert args.redo is True
    assert _parser().parse_args(["corpus", "debian", "--out", "x"]).redo is False


def test_batch_commands_exit_1_after_processing_every_input(capsys, tmp_path, ckpt_path):
    """The exit-status rule (samplecnn.commandline): prepare, like tag, goes through every file, lists the failed
    ones at the end and exits 1."""
    music = tmp_path / "music"
    music.mkdir()
    for i in range(3):
        sf.write(music / f"ok{i}.wav", music_like(1.0, seed=i), SR)
    (music / "bad.wav").write_bytes(b"not audio" * 50)
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "tags", "split"])
        for name, split in (("ok0.wav", "train"), ("bad.wav", "train"), ("ok1.wav", "valid"), ("ok2.wav", "test")):
            w.writerow([name, "a;b", split])
    code, out, err = run(capsys, "prepare", "folder", "--audio", music, "--labels", tmp_path / "labels.csv",
                         "--split-column", "split", "--out", tmp_path / "cache", "--workers", "1")
    assert code == 1, err
    assert "3 clips" in out  # the rest was processed
    assert "samplecnn: 1 of 4 input(s) failed (not decodable: left out of the cache):" in err
    assert "bad.wav:" in err.split("input(s) failed")[1]
    code, out, err = run(capsys, "tag", music / "ok0.wav", "--model", ckpt_path)
    assert code == 0 and "input(s) failed" not in err
