"""`samplecnn serve`: the tagger over HTTP (FastAPI + uvicorn), with a web page, bound to loopback by default.

Why this shape:
- One model thread: requests wait in a bounded queue and the model runs one song at a time with all the cores
  (eager PyTorch on a CPU is fastest that way), so eight clients cost eight queue slots, not eight-way thrashing.
  A full queue answers 503 at once; a request that waited or ran past the timeout gets 503/504.
- Uploads are copied to a fresh temporary file named by the server (never by the client) and deleted afterwards;
  the body is cut off with 413 as soon as it passes the size limit, and audio longer than the duration limit is
  refused (422) from its metadata, and while decoding if the metadata lied.
- Every error is JSON: {"error": {"status", "code", "message"}}, with one-line messages from samplecnn's errors.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import ipaddress
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __version__, audio
from .errors import AudioError, SampleCNNError
from .inference import Tagger, TagResult

WEB = Path(__file__).parent / "web"
_RESULTS_KEPT = 64  # recent results whose taggram image can still be fetched


@dataclasses.dataclass
class Limits:
    max_upload_bytes: int = 100_000_000
    max_seconds: float = 1200.0
    timeout: float = 120.0
    queue: int = 32


class ApiError(StarletteHTTPException):
    """An error answered as JSON with a machine-readable code."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(status_code=status, detail=message, headers=headers)
        self.code = code


class _Cancelled(Exception):
    pass


class TagService:
    """The model behind a one-thread executor, a bounded count of waiting requests, and recent results."""

    def __init__(self, tagger: Tagger, model_id: str, limits: Limits):
        self.tagger, self.model_id, self.limits = tagger, model_id, limits
        self.loop_executor = None
        self.waiting = 0
        self.results: collections.OrderedDict[str, dict] = collections.OrderedDict()
        self.lock = threading.Lock()
        # removed when the service is collected or the process exits (TemporaryDirectory's finalizer)
        self._tmp = tempfile.TemporaryDirectory(prefix="samplecnn-serve-")
        self.tmpdir = self._tmp.name

    def executor(self):
        from concurrent.futures import ThreadPoolExecutor

        if self.loop_executor is None:
            self.loop_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="samplecnn-model")
        return self.loop_executor

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
            cancelled.set()  # a job not started yet never starts; a running one stops at its next block
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
        raise _Cancelled
    seconds = audio.duration(path)
    if seconds is not None and seconds > max_seconds + 1:
        raise ApiError(422, "too_long", f"{filename}: the audio is {seconds:.0f} s long; the limit is "
                                        f"{max_seconds:g} s")
    blocks, total = [], 0
    limit = int((max_seconds + 1) * tagger.sample_rate)
    with audio.stream(path, sr=tagger.sample_rate) as stream:
        for block in stream:
            if cancelled.is_set():
                raise _Cancelled
            total += len(block)
            if total > limit:
                raise ApiError(422, "too_long", f"{filename}: the audio is longer than the {max_seconds:g}-s limit")
            blocks.append(block)
    samples = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
    result = tagger.tag(samples, sr=tagger.sample_rate)
    result.path = filename
    return result


def create_app(tagger: Tagger, model_id: str, limits: Limits | None = None):
    """The ASGI app: FastAPI routes wrapped in the upload-size guard."""
    limits = limits or Limits()
    service = TagService(tagger, model_id, limits)
    app = FastAPI(title="samplecnn", version=__version__,
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
            "embed_dim": int(getattr(tagger.model, "embed_dim", 0)), "default": True}]}

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

    return _UploadLimit(app, limits.max_upload_bytes)


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
        except _Cancelled:
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


class _UploadLimit:
    """ASGI wrapper: 413 for a body over the limit, from Content-Length at once or while it streams in."""

    _SLACK = 64 * 1024  # multipart headers and boundaries around the file

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes + self._SLACK
        self.limit_mb = max_bytes / 1e6
        self.state = app.state  # tests and serve() reach the service through the wrapper

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            response = _error(413, "upload_too_large", self._message())
            response.headers["Connection"] = "close"
            return await response(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise ApiError(413, "upload_too_large", self._message())
            return message

        return await self.app(scope, limited, send)

    def _message(self) -> str:
        return f"the upload is larger than the {self.limit_mb:g} MB limit"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(model: str = "default", host: str = "127.0.0.1", port: int = 8000, device: str | None = None,
          limits: Limits | None = None) -> None:
    """Load the model and run the app with uvicorn until interrupted."""
    import uvicorn

    from .library.index import load_model

    tagger, record = load_model(model, device=device)
    if not is_loopback(host):
        print(f"samplecnn: warning: serving on {host}, reachable from other machines; the service has no "
              "authentication", file=sys.stderr)
    app = create_app(tagger, record.model_id, limits)
    print(f"samplecnn: serving {record.model_id}; the web page is at / and the API docs at /docs", file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_keep_alive=5)
