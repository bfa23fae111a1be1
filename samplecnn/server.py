"""`samplecnn serve`: the tagger over HTTP (FastAPI + uvicorn), with a web page, bound to loopback by default.

Why this shape:
- One model thread: requests wait in a bounded queue and the model runs one song at a time with all the cores
  (eager PyTorch on a CPU is fastest that way), so eight clients cost eight queue slots, not eight-way thrashing.
  A full queue answers 503 at once; a request that waited or ran past the timeout gets 503/504.
  A request that timed out is cancelled: the model thread checks its flag between decoded blocks and between
  segment batches, so the next request does not wait for an answer nobody reads.
- Uploads are copied to a fresh temporary file named by the server (never by the client) and deleted afterwards;
  the body is cut off with 413 as soon as it passes the size limit, and audio longer than the duration limit is
  refused (422) from its metadata, and while decoding if the metadata lied.
- What a client may hold (the `_Guard` wrapper and the `_GuardedH11` protocol): at most `queue + 1` uploads in
  progress, each within `body_timeout`; request headers within `header_timeout`; a response that leaves a body
  unread closes the connection (after a short, bounded linger), so the server never reads the rest of what it
  refused.
- A web page the user visits must not be able to drive the service through the user's browser: the Host header
  must name this service (no DNS rebinding), and a POST from another origin is refused unless allowed by name.
- /docs and /redoc are off: FastAPI's pages load their JavaScript from a CDN. The schema stays at /openapi.json.
- Every error is JSON: {"error": {"status", "code", "message"}}, with one-line messages from samplecnn's errors.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import ipaddress
import os
import re
import secrets
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import h11
import numpy as np
import uvicorn
from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from uvicorn.protocols.http.h11_impl import H11Protocol

from . import __version__, audio, checkpoint, inference, packs, pretrained
from .errors import AudioError, SampleCNNError
from .inference import Cancelled, Tagger, TagResult

WEB = Path(__file__).parent / "web"
_RESULTS_KEPT = 64  # recent results whose taggram image can still be fetched


@dataclasses.dataclass
class Limits:
    max_upload_bytes: int = 100_000_000
    max_seconds: float = 1200.0
    timeout: float = 120.0
    queue: int = 32
    header_timeout: float = 10.0  # a request's headers, from the connection (or its first byte) to the blank line
    body_timeout: float = 60.0  # a request's whole body, from its headers to its last byte


class ApiError(StarletteHTTPException):
    """An error answered as JSON with a machine-readable code."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(status_code=status, detail=message, headers=headers)
        self.code = code


class TagService:
    """The model behind a one-thread executor, a bounded count of waiting requests, and recent results."""

    def __init__(self, tagger: Tagger, model_id: str, limits: Limits):
        self.tagger, self.model_id, self.limits = tagger, model_id, limits
        self.loop_executor = None
        self.waiting = 0  # requests waiting for the model thread or running on it
        self.uploads = 0  # requests with a body, from their headers to their answer (the _Guard counts them)
        self.results: collections.OrderedDict[str, dict] = collections.OrderedDict()
        self.lock = threading.Lock()
        # removed by close() at shutdown, else when the service is collected or the process exits
        self._tmp = tempfile.TemporaryDirectory(prefix="samplecnn-serve-")
        self.tmpdir = self._tmp.name

    def executor(self):
        from concurrent.futures import ThreadPoolExecutor

        if self.loop_executor is None:
            self.loop_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="samplecnn-model")
        return self.loop_executor

    def close(self) -> None:
        """Drop queued jobs and remove the scratch folder: at shutdown, before uvicorn re-raises a SIGTERM (which
        ends the process without running the TemporaryDirectory finalizer)."""
        if self.loop_executor is not None:
            self.loop_executor.shutdown(wait=False, cancel_futures=True)
        self._tmp.cleanup()

    async def run(self, fn, *args):
        """Run `fn` on the model thread, queued behind the others; 503 when the queue is full or the wait too long."""
        if self.waiting >= self.limits.queue + 1:
            raise ApiError(503, "busy", f"the server is busy ({self.waiting} requests in progress); retry shortly",
                           headers={"Retry-After": "2"})
        self.waiting += 1
        cancelled = threading.Event()
        started = time.monotonic()
        future = asyncio.get_running_loop().run_in_executor(self.executor(), fn, *args, cancelled)
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # read even when nobody waits for it
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout=self.limits.timeout)
        except asyncio.TimeoutError:
            cancelled.set()  # a job not started yet never starts; a running one stops at its next block or batch
            waited = time.monotonic() - started
            raise ApiError(504, "timeout", f"no result within {self.limits.timeout:g} s ({waited:.0f} s spent "
                                           "waiting and tagging); try a shorter file or retry later") from None
        finally:
            self.waiting -= 1

    def keep(self, result: TagResult) -> str:
        rid = secrets.token_urlsafe(12)
        with self.lock:
            self.results[rid] = {"result": result, "png": None}
            while len(self.results) > _RESULTS_KEPT:
                self.results.popitem(last=False)
        return rid

    def taggram_png(self, rid: str, cancelled: threading.Event | None = None) -> bytes:
        with self.lock:
            entry = self.results.get(rid)
        if entry is None:
            raise ApiError(404, "unknown_result", "no such result (results are kept for the last "
                                                  f"{_RESULTS_KEPT} requests)")
        if entry["png"] is None:
            entry["png"] = render_png(entry["result"], self.tmpdir)
        return entry["png"]


def render_png(result: TagResult, tmpdir: str) -> bytes:
    from .plot import save_taggram

    fd, name = tempfile.mkstemp(suffix=".png", dir=tmpdir)
    os.close(fd)
    try:
        save_taggram(result, name, overwrite=True)
        return Path(name).read_bytes()
    finally:
        Path(name).unlink(missing_ok=True)


def tag_file(tagger: Tagger, path: str, filename: str, max_seconds: float, cancelled: threading.Event) -> TagResult:
    """Decode (stopping past `max_seconds`) and tag one uploaded file; AudioError/ApiError for unusable uploads."""
    if cancelled.is_set():
        raise Cancelled
    seconds = audio.duration(path)
    if seconds is not None and seconds > max_seconds + 1:
        raise ApiError(422, "too_long", f"{filename}: the audio is {seconds:.0f} s long; the limit is "
                                        f"{max_seconds:g} s")
    blocks, total = [], 0
    limit = int((max_seconds + 1) * tagger.sample_rate)
    with audio.stream(path, sr=tagger.sample_rate) as stream:
        for block in stream:
            if cancelled.is_set():
                raise Cancelled
            total += len(block)
            if total > limit:
                raise ApiError(422, "too_long", f"{filename}: the audio is longer than the {max_seconds:g}-s limit")
            blocks.append(block)
    samples = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
    result = tagger.tag(samples, sr=tagger.sample_rate, cancel=cancelled)
    result.path = filename
    return result


def create_app(tagger: Tagger, model_id: str, limits: Limits | None = None, host: str = "127.0.0.1",
               allow_origins: tuple[str, ...] | list[str] = (), tag_packs: list | tuple = ()):
    """The ASGI app: FastAPI routes wrapped in the _Guard. `host` is the bound address (a Host header may name it);
    `allow_origins` are the web origins other than the service's own whose pages may POST to it; `tag_packs`
    (samplecnn.packs, checked against the model) are scored on every song beside the model's tags."""
    limits = limits or Limits()
    tag_packs = list(tag_packs)
    for pack in tag_packs:
        pack.check_model(model_id)
    packs.check_tag_names(tagger.tags, tag_packs)
    service = TagService(tagger, model_id, limits)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        service.close()

    app = FastAPI(title="samplecnn", version=__version__, docs_url=None, redoc_url=None, lifespan=lifespan,
                  description="Music auto-tagging from the raw waveform. Upload audio to /v1/tag.")
    app.state.service = service

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        code = getattr(exc, "code", None) or {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code,
                                                                                                  "http_error")
        return _error(exc.status_code, code, str(exc.detail), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        parts = []
        for err in exc.errors():
            where = ".".join(str(x) for x in err.get("loc", ())[1:]) or "request"
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        hint = " (send the audio as multipart/form-data in a field named 'file')" \
            if any("file" in p for p in parts) else ""
        return _error(422, "invalid_request", "; ".join(parts) + hint)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(WEB / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=WEB), name="static")

    @app.get("/healthz", summary="Liveness: the model is loaded")
    async def healthz():
        return {"status": "ok", "model": model_id, "in_progress": service.waiting}

    @app.get("/v1/models", summary="The model this server runs")
    async def models():
        info = tagger.info
        return {"models": [{
            "id": model_id, "name": tagger.name, "arch": info.arch, "tags": list(info.tags),
            "thresholds": [float(t) for t in info.thresholds], "sample_rate": info.sample_rate,
            "segment_seconds": info.segment_samples / info.sample_rate,
            "embed_dim": tagger.embed_dim, "default": True,
            "packs": [{"name": p.name, "tags": p.tags, "thresholds": [float(t) for t in p.thresholds]}
                      for p in tag_packs]}]}

    @app.post("/v1/tag", summary="Tag an uploaded audio file")
    async def tag(file: UploadFile = File(..., description="the audio file (any format ffmpeg reads)"),
                  top_k: int = Query(5, ge=0, le=len(tagger.tags), description="tags in 'top'; 0 = all"),
                  taggram: bool = Query(True, description="include the per-segment probabilities")):
        result, timing = await _tag_upload(service, file)
        rid = service.keep(result)
        body = result.to_dict(taggram=taggram)
        for key in ("path", "model"):  # the client's name and the model id replace them
            body.pop(key, None)
        body = {"id": rid, "filename": _display_name(file), "model": model_id, **body}
        body["segment_seconds"] = round(result.segment_seconds, 4)
        body["segment_starts"] = [round(float(t), 3) for t in result.segment_starts]
        body["top"] = [{"tag": t, "score": round(s, 4)} for t, s in result.top(top_k)]
        if tag_packs:  # beside the model's tags, as `samplecnn tag --tags` writes them; packs named, not located
            body.update(packs.own_json([(p, p.scores(result.embedding)) for p in tag_packs]))
            body["packs"] = [{"name": p.name, "model_id": p.model_id, "tags": p.tags} for p in tag_packs]
        body["taggram_url"] = f"/v1/results/{rid}/taggram.png"
        body["timing"] = timing
        return body

    @app.post("/v1/taggram", summary="Tag an uploaded audio file and answer its taggram as a PNG",
              response_class=Response, responses={200: {"content": {"image/png": {}}}})
    async def taggram_upload(file: UploadFile = File(...)):
        result, _ = await _tag_upload(service, file)
        png = await service.run(lambda cancelled: render_png(result, service.tmpdir))
        return Response(png, media_type="image/png")

    @app.get("/v1/results/{rid}/taggram.png", summary="The taggram of a recent /v1/tag result",
             response_class=Response, responses={200: {"content": {"image/png": {}}}})
    async def taggram_of(rid: str):
        png = await service.run(service.taggram_png, rid)
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    return _Guard(app, service, host, [normalize_origin(o) for o in allow_origins])


async def _tag_upload(service: TagService, file: UploadFile) -> tuple[TagResult, dict]:
    name = _display_name(file)
    suffix = Path(name).suffix.lower()
    fd, path = tempfile.mkstemp(prefix="upload-", suffix=suffix if suffix in audio.AUDIO_EXTENSIONS else "",
                                dir=service.tmpdir)
    try:
        with os.fdopen(fd, "wb") as out:
            await asyncio.to_thread(shutil.copyfileobj, file.file, out, 1 << 20)
        if os.path.getsize(path) == 0:
            raise ApiError(400, "empty_upload", f"{name}: the uploaded file is empty (0 bytes)")
        queued = time.monotonic()
        started = {}

        def job(cancelled):
            started["t"] = time.monotonic()
            return tag_file(service.tagger, path, name, service.limits.max_seconds, cancelled)

        try:
            result = await service.run(job)
        except AudioError as e:
            raise _audio_error(name, e) from None
        except Cancelled:
            raise ApiError(504, "timeout", "timed out") from None
        done = time.monotonic()
        return result, {"queued_s": round(started["t"] - queued, 3), "tag_s": round(done - started["t"], 3)}
    finally:
        Path(path).unlink(missing_ok=True)


def _audio_error(name: str, e: SampleCNNError) -> ApiError:
    reason = e.reason
    if reason.startswith(("not an audio file", "has no audio stream", "cannot be opened", "cannot be decoded")):
        return ApiError(415, "not_audio", f"{name}: {reason}")
    if reason.startswith("is empty"):
        return ApiError(400, "empty_upload", f"{name}: the uploaded file is empty (0 bytes)")
    return ApiError(422, "unusable_audio", f"{name}: {reason}")


def _display_name(file: UploadFile) -> str:
    """The client's file name, for messages only (never a path on this machine)."""
    return os.path.basename((file.filename or "upload").replace("\\", "/"))[:200] or "upload"


def _error(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "code": code, "message": message}}, status_code=status,
                        headers=headers)


_SLACK = 64 * 1024  # multipart headers and boundaries around the file
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})
_ORIGIN = re.compile(r"https?://[a-z0-9.\-]+(:\d{1,5})?|https?://\[[0-9a-f:.]+\](:\d{1,5})?")


class _Guard:
    """ASGI wrapper applying the rules a request must pass before FastAPI reads it: its Host, its Origin, and the
    size, count and time limits on uploads. Every refusal is the documented JSON error."""

    def __init__(self, app, service: TagService, host: str, allow_origins: list[str]):
        self.app, self.service, self.limits = app, service, service.limits
        self.bound_host, self.allow_origins = host_name(host), frozenset(allow_origins)
        self.state = app.state  # tests and serve() reach the service through the wrapper

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        has_body = _has_body(headers)
        body = _Body(receive, send, self.limits, has_body, self._cors_headers(headers))
        refusal = self._refusal(scope, headers, has_body)
        if refusal is not None:
            return await refusal(scope, body.receive, body.send)
        if not has_body:
            return await self.app(scope, body.receive, body.send)
        self.service.uploads += 1
        try:
            await self.app(scope, body.receive, body.send)
        finally:
            self.service.uploads -= 1

    def _refusal(self, scope, headers: dict, has_body: bool) -> JSONResponse | None:
        """The error answered before the app runs, or None to let the request in."""
        host = headers.get("host", "")
        if not self._host_allowed(host, scope.get("server")):
            return _error(400, "bad_host", f"this service does not answer to the host {host[:100]!r}; use "
                                           "127.0.0.1, localhost or the address it is bound to, with its port")
        origin = headers.get("origin")
        if origin is not None and scope["method"] not in _SAFE_METHODS and not self._origin_allowed(origin, host):
            return _error(403, "cross_origin", f"a page from {origin[:100]!r} may not post to this service (start "
                                               "it with --allow-origin ORIGIN to allow one)")
        if not has_body:
            return None
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.limits.max_upload_bytes + _SLACK:
            return _error(413, "upload_too_large", _too_large(self.limits))
        if self.service.uploads >= self.limits.queue + 1:
            return _error(503, "busy", f"the server is busy ({self.service.uploads} uploads in progress); retry "
                                       "shortly", {"Retry-After": "2"})
        return None

    def _host_allowed(self, host: str, server: tuple | None) -> bool:
        """Whether the Host header names this service at the port the request came to: loopback names, the bound
        address and the local address of the connection (another name would be DNS rebinding)."""
        parts = split_host(host)
        if parts is None or not server or server[1] is None:
            return False
        name, port = parts
        if port != server[1] and not (port is None and server[1] == 80):
            return False
        return name in _LOOPBACK_NAMES or name == self.bound_host or name == host_name(str(server[0]))

    def _origin_allowed(self, origin: str, host: str) -> bool:
        origin = origin.strip().lower()
        return origin == f"http://{host.strip().lower()}" or origin in self.allow_origins

    def _cors_headers(self, headers: dict) -> list[tuple[bytes, bytes]]:
        """Lets an allowed page's script read the answers (a browser hides them from other origins otherwise)."""
        origin = headers.get("origin", "").strip().lower()
        if origin not in self.allow_origins:
            return []
        return [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin")]


class _Body:
    """One request's body as the app reads it: within the size limit, within the time limit, and known to be read to
    its end or not when the answer starts. An answer that leaves the body unread closes the connection: otherwise
    uvicorn would go on reading (and dropping) whatever the client still sends, a chunked body without end."""

    def __init__(self, receive, send, limits: Limits, has_body: bool, extra_headers: list[tuple[bytes, bytes]]):
        self._receive, self._send, self.limits, self.extra_headers = receive, send, limits, extra_headers
        self.done = not has_body
        self.seen = 0
        self.deadline = time.monotonic() + limits.body_timeout

    async def receive(self):
        if self.done:  # the body is in; what comes now is the disconnect
            return await self._receive()
        try:
            message = await asyncio.wait_for(self._receive(), max(0.0, self.deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise ApiError(408, "body_timeout", f"the upload did not arrive within {self.limits.body_timeout:g} s"
                                                " (the connection is too slow or stalled)") from None
        if message["type"] != "http.request":
            self.done = True  # the client went away
            return message
        self.seen += len(message.get("body", b""))
        if self.seen > self.limits.max_upload_bytes + _SLACK:
            raise ApiError(413, "upload_too_large", _too_large(self.limits))
        self.done = not message.get("more_body", False)
        return message

    async def send(self, message):
        if message["type"] == "http.response.start":
            headers = list(message.get("headers") or []) + self.extra_headers
            if not self.done and not any(k.lower() == b"connection" for k, _ in headers):
                headers.append((b"connection", b"close"))
            message = {**message, "headers": headers}
        await self._send(message)


def _has_body(headers: dict) -> bool:
    return "transfer-encoding" in headers or headers.get("content-length", "0").strip() not in ("", "0")


def _too_large(limits: Limits) -> str:
    return f"the upload is larger than the {limits.max_upload_bytes / 1e6:g} MB limit"


def host_name(host: str) -> str:
    """An address as a Host header writes it: lower case, an IPv6 address in brackets."""
    host = host.strip().lower()
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def split_host(value: str) -> tuple[str, int | None] | None:
    """A Host header's (name, port or None); None when it is malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        name, bracket, rest = value.partition("]")
        name, port = name + bracket, rest[1:] if rest.startswith(":") else rest
        if not bracket or (rest and not rest.startswith(":")):
            return None
    else:
        name, _, port = value.partition(":")
    if not name or (port and not port.isdigit()):
        return None
    return name, int(port) if port else None


def normalize_origin(origin: str) -> str:
    """An --allow-origin value as a browser sends it in Origin (scheme://host[:port], lower case, no path)."""
    normal = origin.strip().lower().rstrip("/")
    if not _ORIGIN.fullmatch(normal):
        raise SampleCNNError(f"--allow-origin must be a web origin like http://localhost:3000 (scheme, host and "
                             f"port, no path), got {origin!r}")
    return normal


_LINGER_S = 2.0  # a lingering close lasts at most this long...
_LINGER_BYTES = 4 << 20  # ...and drops at most this much of what the client still sends


class _GuardedH11(H11Protocol):
    """uvicorn's h11 protocol with two things uvicorn lacks.

    - A deadline on each request's headers: without it a client sending a byte every few seconds (or nothing) holds
      its connection, a socket and its memory forever. The clock runs from the connection (or from the first byte
      of a later request on it) until the headers are complete; idle keep-alive is uvicorn's `timeout_keep_alive`.
    - A lingering close: when the server closes a connection while the client is still sending a body (a refused
      upload), it half-closes first (the answer, then a FIN) and drops what still arrives, for a bounded time and
      size, before closing. Closing at once with unread data makes the kernel answer with a reset, which can destroy
      the error answer before the client reads it (RFC 9112, 9.6).
    """

    header_timeout = 10.0  # set per server by uvicorn_options

    def connection_made(self, transport) -> None:
        self._header_timer, self._socket, self.lingering, self._dropped = None, transport, False, 0
        super().connection_made(_LingeringTransport(transport, self))
        self._watch_headers()

    def data_received(self, data: bytes) -> None:
        if self.lingering:  # the answer is out: what the client still sends is dropped
            self._dropped += len(data)
            if self._dropped > _LINGER_BYTES:
                self._socket.close()
            return
        super().data_received(data)
        self._watch_headers()

    def connection_lost(self, exc) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def close_socket(self) -> None:
        """uvicorn's transport.close(): at once, unless the client is still sending its body."""
        self._stop_header_timer()
        if self.lingering or self._socket.is_closing():
            return
        if self.conn.their_state is not h11.SEND_BODY or not self._socket.can_write_eof():
            self._socket.close()
            return
        self.lingering = True
        self._socket.write_eof()
        self._socket.resume_reading()
        self.loop.call_later(_LINGER_S, self._socket.close)

    def _watch_headers(self) -> None:
        reading_headers = self.conn.their_state is h11.IDLE and not self.transport.is_closing()
        if reading_headers and self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)
        elif not reading_headers:
            self._stop_header_timer()

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._socket.close()


class _LingeringTransport:
    """The socket's transport as uvicorn sees it: close() goes through the protocol's close_socket, and a lingering
    connection counts as closing (so that uvicorn starts no new request on it)."""

    def __init__(self, transport, protocol: _GuardedH11):
        self._transport, self._protocol = transport, protocol

    def __getattr__(self, name):
        return getattr(self._transport, name)

    def close(self) -> None:
        self._protocol.close_socket()

    def is_closing(self) -> bool:
        return self._protocol.lingering or self._transport.is_closing()


def uvicorn_options(app) -> dict:
    """uvicorn's settings for this app (uvicorn.run or uvicorn.Config keywords): the guarded h11 protocol with the
    header deadline of the app's limits, a 5-s keep-alive, and the lifespan on (its end removes the scratch folder)."""
    protocol = type("SampleCNNProtocol", (_GuardedH11,),
                    {"header_timeout": app.state.service.limits.header_timeout})
    return {"http": protocol, "timeout_keep_alive": 5, "lifespan": "on"}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(model: str = "default", host: str = "127.0.0.1", port: int = 8000, device: str | None = None,
          limits: Limits | None = None, allow_origins: tuple[str, ...] | list[str] = (),
          tag_packs: list | tuple = ()) -> None:
    """Load the model and run the app with uvicorn until interrupted."""
    origins = [normalize_origin(o) for o in allow_origins]  # a bad one fails before the model loads
    tagger = inference.load(model, device=device)
    model_id = checkpoint.model_id(pretrained.checkpoint_path(model), tagger.name)  # the id a library stores
    if not is_loopback(host):
        print(f"samplecnn: warning: serving on {host}, reachable from other machines; the service has no "
              "authentication", file=sys.stderr)
    app = create_app(tagger, model_id, limits, host=host, allow_origins=origins, tag_packs=tag_packs)
    own = f" and the tags of {', '.join(p.name for p in tag_packs)}" if tag_packs else ""
    print(f"samplecnn: serving {model_id}{own}; the web page is at / and the API schema at /openapi.json",
          file=sys.stderr)
    try:
        uvicorn.run(app, host=host, port=port, log_level="info", **uvicorn_options(app))
    finally:
        app.state.service.close()  # also when startup failed (the lifespan's end did not run)
