"""`samplecnn index --ray` on a real local Ray cluster: a head and a second node on 127.0.0.1 (ray.cluster_utils),
real generated audio, a decode worker and a model actor SIGKILLed in the middle of the run, and the library compared
with a plain `samplecnn index` of the same files.

Kept small for a 2-core machine: one cluster for the module (1 CPU and 200 MB of object store per node), a handful
of files. The cluster is shut down by its fixture's finaliser whatever happens, which then checks that no process
of it (GCS, raylets, their agents and workers, found as the nodes' process trees) outlives the tests.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from samplecnn.cli import main
from samplecnn.library import store

from conftest import SR, music_like, write_pack

OBJECT_STORE = 200 * 2**20
# before Ray is imported: its nodes, and this process joining them, on 127.0.0.1 only (cluster.LOOPBACK_ENV)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    node = {"num_cpus": 1, "object_store_memory": OBJECT_STORE, "node_ip_address": "127.0.0.1"}
    c = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    try:
        c.add_node(**node)
        c.wait_for_nodes()
        yield c
    finally:
        # the nodes' processes (GCS, raylets...) and all below them: the agents, the workers
        ours = _tree([info.process.pid for n in c.list_all_nodes() for infos in n.all_processes.values()
                      for info in infos])
        c.shutdown()
    left = _outliving(ours)
    assert not left, f"Ray processes outlived the cluster: {left}"


@pytest.fixture(scope="module")
def music(tmp_path_factory):
    """Two long tracks (their decode tasks outlive the first chunks: back-pressure holds them), three short ones,
    one shorter than a segment, and two bad files."""
    folder = tmp_path_factory.mktemp("ray") / "music"
    (folder / "b").mkdir(parents=True)
    for i, seconds in enumerate((150, 130)):
        sf.write(folder / f"long{i}.wav", music_like(seconds, seed=10 + i), SR)
    for i, seconds in enumerate((6, 9, 4)):
        sf.write(folder / "b" / f"short{i}.flac", music_like(seconds, seed=20 + i), SR)
    sf.write(folder / "jingle.wav", music_like(1.0, seed=3), SR)
    (folder / "notes.mp3").write_text("not a song\n" * 40)
    sf.write(folder / "silent.wav", np.zeros(2 * SR, np.float32), SR)
    return folder


@pytest.fixture(scope="module")
def plain(music, ckpt_path, tmp_path_factory):
    db = tmp_path_factory.mktemp("plain") / "plain.sqlite"
    assert main(["index", str(music), "--db", str(db), "--model", str(ckpt_path), "--workers", "1"]) == 1
    return db


def library(db) -> tuple[dict[str, store.Track], dict[str, str]]:
    with store.Library(db) as lib:
        model = lib.model()
        return {t.path: t for t in lib.tracks(model.model_id)}, dict(lib.failures(model.model_id))


def assert_same_library(db, expected, rename=lambda p: p) -> None:
    """Same tracks, files and failures; scores and embeddings within 1e-4 (the batches differ)."""
    want, want_failures = library(expected)
    got, got_failures = library(db)
    assert sorted(got) == sorted(rename(p) for p in want)
    for path, t in want.items():
        g = got[rename(path)]
        np.testing.assert_allclose(g.scores, t.scores, atol=1e-4)
        np.testing.assert_allclose(g.embedding, t.embedding, atol=1e-4)
        assert (g.segments, g.padded, g.hash, g.size, g.decisions) == (t.segments, t.padded, t.hash, t.size,
                                                                      t.decisions)
        assert g.duration == pytest.approx(t.duration)
    assert {rename(p): e for p, e in want_failures.items()} == got_failures
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def _pids(title: str) -> list[int]:
    """Processes whose command line starts with `title` (Ray names a worker after the task it runs)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if cmdline.read_bytes().startswith(title.encode()):
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _kill_first(title: str, stop: threading.Event, killed: list) -> None:
    while not stop.is_set():
        for pid in _pids(title):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            killed.append(pid)
            return
        time.sleep(0.02)


def test_index_on_a_cluster_with_killed_workers_matches_the_plain_index(cluster, music, plain, ckpt_path, tmp_path,
                                                                        capsys):
    db = tmp_path / "ray.sqlite"
    stop = threading.Event()
    killed = {"decoder": [], "actor": []}
    killers = [threading.Thread(target=_kill_first, args=("ray::ray_task", stop, killed["decoder"])),
               threading.Thread(target=_kill_first, args=("ray::ModelActor.score", stop, killed["actor"]))]
    for k in killers:
        k.start()
    try:
        code = main(["index", str(music), "--db", str(db), "--model", str(ckpt_path), "--ray", cluster.address])
    finally:
        stop.set()
        for k in killers:
            k.join()
    out, err = capsys.readouterr()
    assert killed["decoder"] and killed["actor"], "a decode worker and a model actor were killed mid-run"
    assert code == 1, err  # the two bad files, listed at the end
    assert "6 track(s) tagged (6 new, 0 changed), 0 unchanged, 2 failed" in out
    assert_same_library(db, plain)

    # a rerun on the cluster finds nothing to do: the same plan as the single-machine index
    assert main(["index", str(music), "--db", str(db), "--model", str(ckpt_path), "--ray", cluster.address]) == 1
    assert "0 track(s) tagged (0 new, 0 changed), 6 unchanged, 2 failed" in capsys.readouterr().out
    assert_same_library(db, plain)


def test_file_urls_are_read_by_every_node_and_stored_as_given(cluster, music, plain, ckpt_path, tmp_path, capsys):
    db = tmp_path / "urls.sqlite"
    url = "file://" + str(music)
    code = main(["index", url, "--db", str(db), "--model", str(ckpt_path), "--ray", cluster.address])
    assert code == 1, capsys.readouterr().err
    assert_same_library(db, plain, rename=lambda p: "file://" + p)
    # the single-machine index reads the same URLs the same way, and agrees that nothing changed
    assert main(["index", url, "--db", str(db), "--model", str(ckpt_path), "--workers", "1"]) == 1
    assert "0 track(s) tagged (0 new, 0 changed), 6 unchanged, 2 failed" in capsys.readouterr().out


def test_tag_packs_are_stored_and_scored_on_the_cluster_as_by_the_plain_index(cluster, music, plain, ckpt_path,
                                                                               tmp_path, capsys):
    pack = write_pack(tmp_path / "mine.json", ckpt_path)
    db = tmp_path / "packs.sqlite"
    code = main(["index", str(music / "b"), "--db", str(db), "--model", str(ckpt_path), "--ray", cluster.address,
                 "--tags", pack.path])
    out = capsys.readouterr().out
    assert code == 0 and "tag pack mine: added" in out
    with store.Library(db) as lib:
        model_id = lib.model().model_id
        assert [p.name for p in lib.packs(model_id)] == ["mine"]
        own = lib.own_tags(model_id)
    # each track's pack scores are the pack's on the plain index's embedding of the same file
    want = library(plain)[0]
    assert sorted(own) == sorted(p for p in want if p.startswith(str(music / "b")))
    for path, (scores, decided) in own.items():
        np.testing.assert_allclose([scores[t] for t in pack.tags], pack.scores(want[path].embedding), atol=1e-4)
        assert decided == ["my sound"]


def test_ray_not_installed_is_one_line(monkeypatch, music, ckpt_path, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` finds where it is not installed
    code = main(["index", str(music), "--db", str(tmp_path / "x.sqlite"), "--model", str(ckpt_path), "--ray"])
    err = capsys.readouterr().err
    assert code == 1 and err.strip().splitlines() == [
        "samplecnn: error: --ray needs Ray, which is not installed: pip install 'samplecnn[ray]'"]
    assert not (tmp_path / "x.sqlite").exists()


def _committed(db) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as con:
            return con.execute("SELECT count(*) FROM tracks").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def _processes() -> dict[tuple[int, int], int]:
    """(pid, start time) -> parent pid of every process: the start time tells a pid reused from one that ended."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[(int(stat.parent.name), int(fields[19]))] = int(fields[1])
    return found


def _tree(roots) -> set[tuple[int, int]]:
    """`roots` (pids, or (pid, start time) pairs, which may have ended) and every live process below them: Ray's GCS
    and raylets are children of the process that started them, and the agents (which rename themselves
    ray::DashboardAgent, ray::RuntimeEnvAgent) and the workers are children of a raylet."""
    procs = _processes()
    found = {p for p in procs if p[0] in roots} | {r for r in roots if not isinstance(r, int)}
    while True:
        parents = {pid for pid, started in found if (pid, started) in procs}
        more = {p for p, parent in procs.items() if parent in parents} - found
        if not more:
            return found
        found |= more


def _outliving(procs: set[tuple[int, int]], wait_s: float = 60) -> list[str]:
    """The processes of `procs` (and their children) still alive after `wait_s`, SIGKILLed so that none outlives the
    test that found them; their command lines, for the assertion that fails."""
    deadline = time.monotonic() + wait_s
    while True:
        alive = _tree(procs) & set(_processes())
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    names = []
    for pid, _ in alive:
        try:
            names.append(_cmdline(pid).replace(b"\0", b" ").decode(errors="replace")[:80])
            os.kill(pid, signal.SIGKILL)
        except OSError:
            continue
    return names


def test_a_sigkilled_command_leaves_a_consistent_library_no_ray_behind_and_the_rerun_finishes(
        cluster, music, plain, ckpt_path, tmp_path):
    """Killed with its own Ray (`--ray` alone) after the first commit; the rerun joins the test cluster."""
    import subprocess

    db = tmp_path / "killed.sqlite"
    proc = subprocess.Popen([sys.executable, "-m", "samplecnn", "index", str(music), "--db", str(db), "--model",
                             str(ckpt_path), "--ray"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        while _committed(db) < 1:
            assert proc.poll() is None, f"the run ended before the kill point: {proc.communicate()}"
            time.sleep(0.05)
    finally:
        ray_of_command = _tree([proc.pid]) - {p for p in _processes() if p[0] == proc.pid}
        raylets = [pid for pid, _ in ray_of_command if b"raylet" in _cmdline(pid)]
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    try:
        assert raylets, "the command started a Ray of its own"
        with sqlite3.connect(db) as con:
            assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        kept = library(db)[0]
        assert 1 <= len(kept) < 6
        want = library(plain)[0]
        for path, t in kept.items():  # what was committed is whole
            np.testing.assert_allclose(t.scores, want[path].scores, atol=1e-4)
        assert main(["index", str(music), "--db", str(db), "--model", str(ckpt_path), "--ray", cluster.address]) == 1
        assert_same_library(db, plain)
    finally:
        # its GCS, raylet and workers die with it at once; its agents see the raylet gone within 2 s but then wait
        # out Ray's 60-s timeout reporting that to the dead GCS (ray._private.process_watcher): checked last
        left = _outliving(ray_of_command, wait_s=90)
    assert not left, f"the Ray the killed command started went with it, but these stayed: {left}"
