"""The HTTP service over real loopback sockets: uvicorn serving the app, httpx as the client.

Success, every documented error (bad, empty, non-audio, too large, too long uploads; bad parameters; unknown routes;
a full queue; a timeout), what a client may hold (uploads in progress, slow headers and bodies, endless chunked
bodies, the model after a timeout), the Host and Origin rules, and `samplecnn serve` itself as a subprocess bound to
127.0.0.1. Raw sockets stand in for clients that misbehave in ways httpx will not.
"""

from __future__ import annotations

import concurrent.futures
import copy
import io
import json
import os
import re
import select
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
from samplecnn.library.index import tagger_and_record

from conftest import SR, music_like, write_pack

ROOT = Path(__file__).resolve().parents[1]


class LiveServer:
    """The app served by a real uvicorn in a background thread, on a free loopback port."""

    def __init__(self, app):
        self.app = app
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", **server.uvicorn_options(app)))
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

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)


def wav_bytes(seconds: float, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, music_like(seconds, seed=seed), SR, format="WAV")
    return buf.getvalue()


@pytest.fixture(scope="module")
def model(ckpt_path):
    return tagger_and_record(str(ckpt_path))


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


def upload_head(port: int, length: int | None = None, boundary: str = "samplecnnboundary") -> bytes:
    """Request line and headers of a multipart POST /v1/tag: with Content-Length, or chunked when `length` is None."""
    size = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (f"POST /v1/tag HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{size}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n").encode()


def part_head(boundary: str = "samplecnnboundary") -> bytes:
    return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"slow.wav\"\r\n"
            "Content-Type: audio/wav\r\n\r\n").encode()


def drip_until_closed(sock: socket.socket, data: bytes, every: float, limit: float) -> tuple[float | None, bytes]:
    """Send `data` one byte every `every` s (then only listen) until the server closes the connection or `limit` s
    pass. Returns (seconds until it closed, or None if it never did; what it answered)."""
    start, answer, pending = time.monotonic(), b"", data
    while (elapsed := time.monotonic() - start) < limit:
        readable, _, _ = select.select([sock], [], [], every)
        try:
            if readable:
                chunk = sock.recv(65536)
                if not chunk:
                    return elapsed, answer
                answer += chunk
            elif pending:
                sock.send(pending[:1])
                pending = pending[1:]
        except OSError:  # reset by the server
            return elapsed, answer
    return None, answer


def read_response(sock: socket.socket) -> bytes:
    """One whole HTTP response (head and Content-Length body) from a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536) or pytest.fail(f"the connection closed mid-answer: {data!r}")
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(body) < length:
        body += sock.recv(65536) or pytest.fail("the connection closed mid-answer")
    return head + b"\r\n\r\n" + body


def assert_error(response, status: int, code: str, *fragments: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["status"] == status and error["code"] == code
    for fragment in fragments:
        assert fragment in error["message"], error["message"]


# ------------------------------------------------------------------------------------------------------------------
# success


def test_health_models_schema_and_page_with_nothing_from_a_cdn(client, model):
    tagger, record = model
    assert client.get("/healthz").json() == {"status": "ok", "model": record.model_id, "in_progress": 0}
    (m,) = client.get("/v1/models").json()["models"]
    assert m["id"] == record.model_id and m["tags"] == tagger.tags and m["arch"] == "samplecnn"
    assert m["segment_seconds"] == pytest.approx(59049 / 22050)
    spec = client.get("/openapi.json").json()
    assert {"/v1/tag", "/v1/models", "/healthz", "/v1/taggram", "/v1/results/{rid}/taggram.png"} <= set(spec["paths"])
    for cdn_page in ("/docs", "/redoc"):  # FastAPI's pages load their scripts from a CDN: off
        assert_error(client.get(cdn_page), 404, "not_found")
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text and 'href="/openapi.json"' in page.text
    for text in (page.text, client.get("/static/app.js").text, client.get("/static/style.css").text):
        assert not re.search(r"https?://|[\"'(]//", text), "the page loads something from another host"


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


def test_tag_packs_are_scored_beside_the_models_tags(model, ckpt_path, tmp_path):
    tagger, record = model
    pack = write_pack(tmp_path / "mine.json", ckpt_path)
    data = wav_bytes(4.0, seed=5)
    (tmp_path / "song.wav").write_bytes(data)
    expected = pack.scores(tagger.embed(tmp_path / "song.wav"))
    with LiveServer(server.create_app(tagger, record.model_id, tag_packs=[pack])) as srv, \
            httpx.Client(base_url=srv.url, timeout=60) as c:
        (m,) = c.get("/v1/models").json()["models"]
        assert m["packs"] == [{"name": "mine", "tags": ["my sound", "my silence"], "thresholds": [0.0, 1.0]}]
        body = c.post("/v1/tag", files={"file": ("song.wav", data)}).json()
    assert list(body["pack_scores"]) == ["my sound", "my silence"] and len(body["scores"]) == 50
    np.testing.assert_allclose(list(body["pack_scores"].values()), expected, atol=1e-4)
    assert body["pack_decisions"] == ["my sound"]
    assert body["packs"] == [{"name": "mine", "model_id": record.model_id, "tags": ["my sound", "my silence"]}]
    assert str(tmp_path) not in json.dumps(body)  # the server's own paths stay on the server


def test_a_pack_of_another_model_or_a_clashing_tag_is_refused(model, ckpt_path, tmp_path, capsys):
    from samplecnn import packs
    from samplecnn.cli import main

    tagger, record = model
    theirs = write_pack(tmp_path / "theirs.json", "default")
    with pytest.raises(packs.PackError, match="this tag pack is for model default-"):
        server.create_app(tagger, record.model_id, tag_packs=[theirs])
    clash = write_pack(tmp_path / "clash.json", ckpt_path, tags=("piano", "mine"))
    with pytest.raises(packs.PackError, match="tag 'piano' is in both the model and this pack"):
        server.create_app(tagger, record.model_id, tag_packs=[clash])
    assert main(["serve", "--model", str(ckpt_path), "--tags", str(tmp_path / "theirs.json")]) == 1
    err = capsys.readouterr().err
    assert "this tag pack is for model default-" in err and len(err.strip().splitlines()) == 1


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
        try:
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                first = pool.submit(client.post, "/v1/tag", files={"file": ("a.wav", data)})
                while client.get("/healthz").json()["in_progress"] < 1:
                    assert not first.done(), first.result().text
                second = client.post("/v1/tag", files={"file": ("b.wav", data)})
                assert_error(second, 503, "busy", "retry")
                assert second.headers["retry-after"] == "2"
                assert_error(first.result(), 504, "timeout", "1 s")  # waited past the 1-s timeout behind the block
        finally:
            release.set()  # else the blocked model thread would hold up the interpreter's exit
        ok = client.post("/v1/tag", files={"file": ("c.wav", data)})
        assert ok.status_code == 200, ok.text  # the cancelled request never ran; the next one does


# ------------------------------------------------------------------------------------------------------------------
# what a client may hold


def test_uploads_in_progress_are_bounded_by_the_queue(model):
    tagger, record = model
    limits = server.Limits(max_upload_bytes=30_000_000, max_seconds=10.0, timeout=60.0, queue=1)
    with LiveServer(server.create_app(tagger, record.model_id, limits)) as srv, \
            httpx.Client(base_url=srv.url, timeout=60) as client:
        unfinished = [srv.connect() for _ in range(2)]  # queue + 1 uploads of 20 MiB that stop after 1 MiB
        for sock in unfinished:
            sock.sendall(upload_head(srv.port, 20 << 20) + part_head() + b"\x00" * (1 << 20))
        deadline = time.monotonic() + 10
        while srv.service.uploads < 2:
            assert time.monotonic() < deadline, "the server never saw the uploads"
            time.sleep(0.05)
        refused = client.post("/v1/tag", files={"file": ("a.wav", wav_bytes(3.0))})
        assert_error(refused, 503, "busy", "2 uploads in progress", "retry")
        assert refused.headers["retry-after"] == "2"

        late = srv.connect()  # refused before its body is read: the connection closes, the 20 MiB are not taken
        closed, answer = drip_until_closed(late, upload_head(srv.port, 20 << 20), every=0.001, limit=5)
        assert closed is not None and answer.startswith(b"HTTP/1.1 503") and b'"busy"' in answer
        late.close()

        for sock in unfinished:
            sock.close()
        while srv.service.uploads:
            assert time.monotonic() < deadline + 10, "abandoned uploads were never released"
            time.sleep(0.05)
        ok = client.post("/v1/tag", files={"file": ("b.wav", wav_bytes(3.0))}, params={"taggram": "false"})
        assert ok.status_code == 200, ok.text
        assert os.listdir(srv.service.tmpdir) == []


def test_slow_or_silent_headers_are_cut_off(model):
    tagger, record = model
    limits = server.Limits(max_upload_bytes=1_000_000, header_timeout=1.0)
    with LiveServer(server.create_app(tagger, record.model_id, limits)) as srv:
        request = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\nX-Pad: {'a' * 40}\r\n\r\n".encode()
        slow, silent = srv.connect(), srv.connect()
        closed, answer = drip_until_closed(slow, request, every=0.2, limit=6)  # a byte every 0.2 s: 14 s in all
        assert closed is not None and closed < 2.5 and answer == b""  # 1 s from the connection
        closed, _ = drip_until_closed(silent, b"", every=0.1, limit=6)
        assert closed is not None and closed < 2.5
        for sock in (slow, silent):
            sock.close()

        with srv.connect() as sock:  # a prompt client keeps its connection across requests (keep-alive)
            for _ in range(2):
                sock.sendall(request)
                assert read_response(sock).startswith(b"HTTP/1.1 200")
                time.sleep(1.5)  # idle between requests is not slow headers
            sock.sendall(request)
            assert read_response(sock).startswith(b"HTTP/1.1 200")


def test_a_slow_body_gets_408_and_the_connection_closes(model):
    tagger, record = model
    limits = server.Limits(max_upload_bytes=1_000_000, body_timeout=1.5)
    with LiveServer(server.create_app(tagger, record.model_id, limits)) as srv, srv.connect() as sock:
        sock.sendall(upload_head(srv.port, 100_000))
        closed, answer = drip_until_closed(sock, part_head() + b"\x00" * 100, every=0.2, limit=8)
        assert closed is not None and 1.3 < closed < 4, closed
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408") and b"connection: close" in head.lower()
        assert b'"code":"body_timeout"' in body and b"1.5 s" in body
        # the server releases the upload's slot in a `finally` that may run just after the client sees the close
        deadline = time.monotonic() + 2.0
        while srv.service.uploads and time.monotonic() < deadline:
            time.sleep(0.02)
        assert srv.service.uploads == 0


def test_an_over_limit_chunked_body_closes_the_connection(live):
    frame = b"%x\r\n%s\r\n" % (65536, b"\x00" * 65536)
    with live.connect() as sock:
        sock.sendall(upload_head(live.port) + b"%x\r\n%s\r\n" % (len(part_head()), part_head()))
        sent = 0
        try:
            while sent < 200_000_000:  # the limit is 1 MB; an open connection would take all 200 MB
                sock.sendall(frame)
                sent += 65536
        except OSError:
            pass
        assert sent < 50_000_000, f"the server read {sent / 1e6:.0f} MB of a body it had refused"
        sock.settimeout(5)
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 413")  # Linux hands over the answer queued before the reset


class SlowModel:
    """A stand-in network that takes `delay` s per segment batch (the forward pass of Tagger.run_segments: embed,
    then the classifier), and counts its calls."""

    def __init__(self, model, delay: float):
        self.model, self.delay, self.calls = model, delay, 0

    def embed(self, x):
        self.calls += 1
        time.sleep(self.delay)
        return self.model.embed(x)

    def __getattr__(self, name):  # classifier, embed_dim
        return getattr(self.model, name)


def test_a_timed_out_request_stops_using_the_model(model):
    tagger, record = model
    slow = copy.copy(tagger)
    slow.model = SlowModel(tagger.model, delay=0.2)  # 60 s of audio: 22 segments, 4.4 s
    limits = server.Limits(max_upload_bytes=5_000_000, max_seconds=120.0, timeout=1.5)
    with LiveServer(server.create_app(slow, record.model_id, limits)) as srv, \
            httpx.Client(base_url=srv.url, timeout=60) as client:
        assert_error(client.post("/v1/tag", files={"file": ("long.wav", wav_bytes(60.0))}), 504, "timeout")
        calls = slow.model.calls
        assert 0 < calls < 22
        start = time.monotonic()
        short = client.post("/v1/tag", files={"file": ("short.wav", wav_bytes(3.0))}, params={"taggram": "false"})
        assert short.status_code == 200, short.text  # not stuck behind the rest of the long one
        assert time.monotonic() - start < 1.5
        assert slow.model.calls <= calls + 2  # the long one's last batch, then the short one's only segment


# ------------------------------------------------------------------------------------------------------------------
# Host and Origin


def test_the_host_header_must_name_this_service(client, live):
    port = live.port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", f"LocalHost:{port}"):
        r = client.get("/healthz", headers={"Host": host})
        assert r.status_code == 200, (host, r.text)
    for host in (f"evil.example:{port}", "evil.example", f"localhost.evil.example:{port}", f"127.0.0.1:{port + 1}",
                 "127.0.0.1", f"127.0.0.1:{port}x", f"[::1:{port}"):
        assert_error(client.get("/healthz", headers={"Host": host}), 400, "bad_host", "127.0.0.1")
    # a rebound DNS name cannot post either: its body is not read, and the answer still reaches the client
    for _ in range(10):
        r = client.post("/v1/tag", files={"file": ("a.wav", wav_bytes(3.0))},
                        headers={"Host": f"evil.example:{port}"})
        assert_error(r, 400, "bad_host")
        assert r.headers["connection"] == "close"


def test_the_bound_host_name_is_accepted(model):
    tagger, record = model
    with LiveServer(server.create_app(tagger, record.model_id, host="tagger.lan")) as srv, \
            httpx.Client(base_url=srv.url, timeout=60) as client:
        assert client.get("/healthz", headers={"Host": f"tagger.lan:{srv.port}"}).status_code == 200
        assert_error(client.get("/healthz", headers={"Host": f"other.lan:{srv.port}"}), 400, "bad_host")


def test_cross_origin_posts_are_refused_unless_allowed(model):
    tagger, record = model
    app = server.create_app(tagger, record.model_id, allow_origins=["http://App.example:3000/"])
    with LiveServer(app) as srv, httpx.Client(base_url=srv.url, timeout=60) as client:
        data = wav_bytes(3.0)

        def post(origin, path="/v1/tag"):
            return client.post(path, files={"file": ("a.wav", data)}, params={"taggram": "false"},
                               headers={"Origin": origin})

        assert post(srv.url).status_code == 200  # the service's own page
        for origin in ("http://evil.example", "null", srv.url.replace("127.0.0.1", "localhost"),
                       srv.url.replace("http:", "https:")):
            assert_error(post(origin), 403, "cross_origin", "--allow-origin")
        assert_error(post("http://evil.example", "/v1/taggram"), 403, "cross_origin")
        allowed = post("http://app.example:3000")
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "http://app.example:3000"
        read = client.get("/v1/models", headers={"Origin": "http://evil.example"})  # reads are the browser's to hide
        assert read.status_code == 200 and "access-control-allow-origin" not in read.headers


# ------------------------------------------------------------------------------------------------------------------
# the command


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_samplecnn_serve_binds_loopback_by_default(ckpt_path, tmp_path, stop):
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
        proc.send_signal(stop)
        proc.communicate(timeout=30)
    assert proc.returncode == (0 if stop == signal.SIGINT else -stop)  # uvicorn re-raises a SIGTERM once shut down
    assert not list(tmp_path.glob("samplecnn-serve-*")), "the scratch folder outlived the server"


def test_serve_refuses_a_missing_model_in_one_line(capsys, tmp_path):
    from samplecnn.cli import main

    assert main(["serve", "--model", str(tmp_path / "missing.safetensors")]) == 1
    err = capsys.readouterr().err
    assert "no such checkpoint file" in err and len(err.strip().splitlines()) == 1


def test_serve_refuses_a_bad_allow_origin_in_one_line(capsys, tmp_path):
    from samplecnn.cli import main

    assert main(["serve", "--model", str(tmp_path / "missing.safetensors"), "--allow-origin", "app.example/x"]) == 1
    err = capsys.readouterr().err
    assert "--allow-origin must be a web origin" in err and len(err.strip().splitlines()) == 1


def test_host_and_origin_parsing():
    assert server.split_host("LocalHost:8000") == ("localhost", 8000) and server.split_host("[::1]") == ("[::1]", None)
    assert server.split_host("[::1]:80") == ("[::1]", 80)
    for bad in ("", ":8000", "a:b", "[::1", "[::1]x", "a:8000:1"):
        assert server.split_host(bad) is None, bad
    assert server.host_name("::1") == "[::1]" and server.host_name("Tagger.LAN") == "tagger.lan"
    assert server.normalize_origin("HTTP://App.example:3000/") == "http://app.example:3000"
    for bad in ("app.example", "http://a/b", "ftp://a", "*", "http://a b"):
        with pytest.raises(server.SampleCNNError):
            server.normalize_origin(bad)


def test_is_loopback():
    assert server.is_loopback("127.0.0.1") and server.is_loopback("::1") and server.is_loopback("localhost")
    assert not server.is_loopback("0.0.0.0") and not server.is_loopback("192.168.1.2")
