"""The HTTP service over real loopback sockets: uvicorn serving the app, httpx as the client.

Success, every documented error (bad, empty, non-audio, too large, too long uploads; bad parameters; unknown routes;
a full queue; a timeout), and `samplecnn serve` itself as a subprocess bound to 127.0.0.1.
"""

from __future__ import annotations

import concurrent.futures
import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
import uvicorn

from samplecnn import server
from samplecnn.library.index import load_model

from conftest import SR, music_like

ROOT = Path(__file__).resolve().parents[1]


class LiveServer:
    """The app served by a real uvicorn in a background thread, on a free loopback port."""

    def __init__(self, app):
        self.app = app
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        while not self.server.started:
            assert self.thread.is_alive(), "uvicorn failed to start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()

    @property
    def service(self) -> server.TagService:
        return self.app.state.service


def wav_bytes(seconds: float, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, music_like(seconds, seed=seed), SR, format="WAV")
    return buf.getvalue()


@pytest.fixture(scope="module")
def model(ckpt_path):
    return load_model(str(ckpt_path))


@pytest.fixture(scope="module")
def live(model):
    tagger, record = model
    limits = server.Limits(max_upload_bytes=1_000_000, max_seconds=10.0, timeout=60.0, queue=16)
    with LiveServer(server.create_app(tagger, record.model_id, limits)) as srv:
        yield srv


@pytest.fixture()
def client(live):
    with httpx.Client(base_url=live.url, timeout=60) as c:
        yield c


def assert_error(response, status: int, code: str, *fragments: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["status"] == status and error["code"] == code
    for fragment in fragments:
        assert fragment in error["message"], error["message"]


# ------------------------------------------------------------------------------------------------------------------
# success


def test_health_models_docs_and_page(client, model):
    tagger, record = model
    assert client.get("/healthz").json() == {"status": "ok", "model": record.model_id, "in_progress": 0}
    (m,) = client.get("/v1/models").json()["models"]
    assert m["id"] == record.model_id and m["tags"] == tagger.tags and m["arch"] == "samplecnn"
    assert m["segment_seconds"] == pytest.approx(59049 / 22050)
    spec = client.get("/openapi.json").json()
    assert {"/v1/tag", "/v1/models", "/healthz", "/v1/taggram", "/v1/results/{rid}/taggram.png"} <= set(spec["paths"])
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200


def test_tag_returns_scores_decisions_segments_and_a_taggram(client, model, tmp_path):
    tagger, record = model
    data = wav_bytes(6.0, seed=3)
    (tmp_path / "song.wav").write_bytes(data)
    expected = tagger.tag(tmp_path / "song.wav")

    r = client.post("/v1/tag", files={"file": ("song.wav", data, "audio/wav")}, params={"top_k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["filename"] == "song.wav" and body["model"] == record.model_id
    assert body["duration"] == pytest.approx(6.0) and body["segments"] == 2 and not body["padded"]
    assert [t["tag"] for t in body["top"]] == [t for t, _ in expected.top(3)]
    assert body["decisions"] == expected.decisions
    assert list(body["scores"]) == tagger.tags
    np.testing.assert_allclose(list(body["scores"].values()), expected.scores, atol=1e-4)
    assert body["segment_starts"] == [0.0, pytest.approx(2.678, abs=1e-3)]
    np.testing.assert_allclose(body["taggram"], expected.taggram, atol=1e-4)
    assert body["timing"]["tag_s"] >= 0

    png = client.get(body["taggram_url"])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content[:8] == b"\x89PNG\r\n\x1a\n" and len(png.content) > 10_000

    r = client.post("/v1/tag", files={"file": ("song.wav", data)}, params={"top_k": 0, "taggram": "false"})
    assert len(r.json()["top"]) == 50 and "taggram" not in r.json()

    r = client.post("/v1/taggram", files={"file": ("song.wav", data)})
    assert r.status_code == 200 and r.content[:4] == b"\x89PNG"


def test_concurrent_clients_are_queued_and_all_answered(client, live):
    data = wav_bytes(3.0, seed=4)

    def one(i):
        with httpx.Client(base_url=live.url, timeout=120) as c:
            return c.post("/v1/tag", files={"file": (f"{i}.wav", data)}, params={"taggram": "false"})

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(one, range(8)))
    assert [r.status_code for r in responses] == [200] * 8
    assert len({tuple(r.json()["scores"].values()) for r in responses}) == 1  # same audio, same answer
    assert client.get("/healthz").json()["in_progress"] == 0


def test_uploads_never_land_under_a_client_chosen_path(client, live, tmp_path):
    data = wav_bytes(3.0)
    for name in ("../../../../tmp/evil.wav", "/etc/passwd", "..\\..\\x.wav", "a/b/c.mp3"):
        r = client.post("/v1/tag", files={"file": (name, data)}, params={"taggram": "false"})
        assert r.status_code == 200, r.text
        assert "/" not in r.json()["filename"] and "\\" not in r.json()["filename"]
    assert not Path("/tmp/evil.wav").exists()
    assert os.listdir(live.service.tmpdir) == []  # every upload was deleted after tagging


# ------------------------------------------------------------------------------------------------------------------
# errors


def test_bad_uploads_get_clear_json_errors(client, tmp_path):
    silent = io.BytesIO()
    sf.write(silent, np.zeros(3 * SR, np.float32), SR, format="WAV")
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 200
    cases = [
        (("empty.wav", b""), 400, "empty_upload", "empty.wav", "empty"),
        (("notes.mp3", b"these are my notes, not a song\n" * 40), 415, "not_audio", "notes.mp3", "not an audio"),
        (("cover.png", png), 415, "not_audio", "cover.png"),
        (("silent.wav", silent.getvalue()), 422, "unusable_audio", "silent.wav", "is silent"),
        (("long.wav", wav_bytes(11.5)), 422, "too_long", "long.wav", "10 s"),
    ]
    for (name, data), status, code, *fragments in cases:
        assert_error(client.post("/v1/tag", files={"file": (name, data)}), status, code, *fragments)


def test_too_large_uploads_are_cut_off_with_413(client, live):
    big = b"\x00" * 1_200_000
    assert_error(client.post("/v1/tag", files={"file": ("big.wav", big)}), 413, "upload_too_large", "1 MB")

    # without Content-Length (chunked): the body is counted as it streams in
    boundary = "samplecnnboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.wav\"\r\n"
            "Content-Type: audio/wav\r\n\r\n").encode()

    def chunks():
        yield head
        for _ in range(20):
            yield b"\x00" * 100_000
        yield f"\r\n--{boundary}--\r\n".encode()

    r = client.post("/v1/tag", content=chunks(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert "content-length" not in {k.lower() for k in r.request.headers}
    assert_error(r, 413, "upload_too_large")
    assert client.get("/healthz").status_code == 200  # the server is fine afterwards


def test_bad_requests_and_routes(client):
    assert_error(client.post("/v1/tag"), 422, "invalid_request", "file", "multipart/form-data")
    assert_error(client.post("/v1/tag", data={"other": "x"}), 422, "invalid_request", "file")
    assert_error(client.post("/v1/tag", content=b"raw bytes", headers={"Content-Type": "audio/wav"}), 422,
                 "invalid_request")
    data = wav_bytes(3.0)
    for bad in ("-1", "51", "many"):
        assert_error(client.post("/v1/tag", files={"file": ("a.wav", data)}, params={"top_k": bad}), 422,
                     "invalid_request", "top_k")
    assert_error(client.get("/v1/nothing"), 404, "not_found")
    assert_error(client.get("/v1/tag"), 405, "method_not_allowed")
    assert_error(client.get("/v1/results/unknown/taggram.png"), 404, "unknown_result")


def test_a_full_queue_answers_503_and_a_stuck_request_504(model):
    tagger, record = model
    limits = server.Limits(max_upload_bytes=1_000_000, max_seconds=10.0, timeout=1.0, queue=0)
    with LiveServer(server.create_app(tagger, record.model_id, limits)) as srv, \
            httpx.Client(base_url=srv.url, timeout=60) as client:
        release = threading.Event()
        srv.service.executor().submit(release.wait)  # the model thread is busy until released
        data = wav_bytes(3.0)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            first = pool.submit(client.post, "/v1/tag", files={"file": ("a.wav", data)})
            while client.get("/healthz").json()["in_progress"] < 1:
                assert not first.done(), first.result().text
            second = client.post("/v1/tag", files={"file": ("b.wav", data)})
            assert_error(second, 503, "busy", "retry")
            assert second.headers["retry-after"] == "2"
            assert_error(first.result(), 504, "timeout", "1 s")  # waited past the 1-s timeout behind the block
        release.set()
        ok = client.post("/v1/tag", files={"file": ("c.wav", data)})
        assert ok.status_code == 200, ok.text  # the cancelled request never ran; the next one does


# ------------------------------------------------------------------------------------------------------------------
# the command


def test_samplecnn_serve_binds_loopback_by_default(ckpt_path, tmp_path):
    env = dict(os.environ, TMPDIR=str(tmp_path))  # to see the server's scratch folder come and go
    proc = subprocess.Popen([sys.executable, "-m", "samplecnn", "serve", "--model", str(ckpt_path), "--port", "0"],
                            cwd=ROOT, stderr=subprocess.PIPE, text=True, env=env)
    try:
        url = None
        for line in proc.stderr:
            match = re.search(r"Uvicorn running on (http://[\d.]+:\d+)", line)
            if match:
                url = match.group(1)
                break
        assert url is not None and url.startswith("http://127.0.0.1:"), "no startup line"
        health = httpx.get(f"{url}/healthz", timeout=30).json()
        assert health["status"] == "ok" and health["model"].startswith(Path(ckpt_path).stem + "-")
        assert len(list(tmp_path.glob("samplecnn-serve-*"))) == 1
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert not list(tmp_path.glob("samplecnn-serve-*")), "the scratch folder outlived the server"


def test_serve_refuses_a_missing_model_in_one_line(capsys, tmp_path):
    from samplecnn.cli import main

    assert main(["serve", "--model", str(tmp_path / "missing.safetensors")]) == 1
    err = capsys.readouterr().err
    assert "no such checkpoint file" in err and len(err.strip().splitlines()) == 1


def test_is_loopback():
    assert server.is_loopback("127.0.0.1") and server.is_loopback("::1") and server.is_loopback("localhost")
    assert not server.is_loopback("0.0.0.0") and not server.is_loopback("192.168.1.2")
