"""Load test of `samplecnn serve` on loopback: N requests from C concurrent clients.

    .venv/bin/python benchmarks/bench_server.py [--requests 200] [--clients 8] [--seconds 10] [--model CKPT]

Starts the real command (`python -m samplecnn serve --port 0`, bound to 127.0.0.1) with an untrained checkpoint
unless --model is given, uploads the same mp3 (44.1 kHz stereo, --seconds long) to POST /v1/tag from C threads,
each with its own keep-alive connection, and prints throughput, p50/p95/max latency, the error count, and the
server's resident memory sampled every 0.2 s (after warm-up, at the half-way mark and at the end: flat means the
second half did not grow). Every request goes to 127.0.0.1; the loop is bounded by --requests and --deadline.

Then (unless --no-abuse) the abuse cases, against a second server with small limits (--queue 8 --timeout 2
--body-timeout 5 --max-upload-mb 30): 40 unfinished 20 MiB uploads at once (how many are held, the server's fds and
disk), 6 clients dripping headers and 6 dripping a body a byte every 2 s (when each is closed), an endless chunked
upload (how much is read before the connection closes), a 600-s file past the timeout followed by a 10-s one (is
the model still busy with the first?), a rebound Host and a foreign Origin, and the scratch folder after shutdown.
Each loop is bounded (counts, sizes, 75 s at most per slow client); all of it takes about 30 s.
Exits 1 on any error or broken rule. Run it alone: other CPU-heavy jobs make the numbers meaningless.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import select
import signal
import socket
import stat
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import wave
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_index_memory import rss_mb  # noqa: E402
from bench_tag import make_song  # noqa: E402


class MemorySampler(threading.Thread):
    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.samples, self.stop = pid, [], threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            self.samples.append((time.monotonic(), rss_mb(self.pid)))


def start_server(model: str, options: list[str] = (), env: dict | None = None) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "samplecnn", "serve", "--model", model, "--port", "0", *options],
                            cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    for line in proc.stderr:
        match = re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", line)
        if match:
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()  # keep draining
            return proc, match.group(1)
    raise SystemExit(f"the server did not start (exit code {proc.wait()})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the uploaded song")
    parser.add_argument("--model", help="checkpoint (default: an untrained samplecnn written to a temp folder)")
    parser.add_argument("--deadline", type=float, default=900.0, help="stop sending after this many seconds")
    parser.add_argument("--no-abuse", action="store_true", help="only the load test")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            model = str(Path(tmp) / "model.safetensors")
            subprocess.run([sys.executable, "-m", "samplecnn", "init", "samplecnn", model], check=True,
                           stdout=subprocess.DEVNULL, cwd=ROOT)
        song = make_song(Path(tmp) / "song.mp3", args.seconds).read_bytes()
        proc, url = start_server(model)
        try:
            failed = run_load(proc, url, song, args)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
        if not args.no_abuse:
            scratch = Path(tmp) / "server-tmp"
            scratch.mkdir()
            failed += run_abuse(model, song, str(scratch))
        return 1 if failed else 0


def run_load(proc, url: str, song: bytes, args) -> int:
    def post(client: httpx.Client) -> httpx.Response:
        return client.post("/v1/tag", files={"file": ("song.mp3", song, "audio/mpeg")}, params={"taggram": "false"})

    with httpx.Client(base_url=url, timeout=300) as client:
        for _ in range(3):  # warm-up: first-call allocations are not a leak
            post(client).raise_for_status()
    sampler = MemorySampler(proc.pid)
    sampler.start()
    time.sleep(0.5)

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    next_request = iter(range(args.requests))
    deadline = time.monotonic() + args.deadline

    def client_loop() -> None:
        with httpx.Client(base_url=url, timeout=300) as client:
            while time.monotonic() < deadline:
                with lock:
                    if next(next_request, None) is None:
                        return
                start = time.perf_counter()
                try:
                    r = post(client)
                    ok = r.status_code == 200
                    problem = None if ok else f"{r.status_code} {r.text[:200]}"
                except httpx.HTTPError as e:
                    problem = f"{type(e).__name__}: {e}"
                elapsed = time.perf_counter() - start
                with lock:
                    (errors.append(problem) if problem else latencies.append(elapsed))

    start = time.monotonic()
    threads = [threading.Thread(target=client_loop) for _ in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - start
    time.sleep(0.5)
    sampler.stop.set()
    sampler.join()

    done = len(latencies)
    mem = [m for _, m in sampler.samples]
    half = [m for t, m in sampler.samples if t <= start + wall / 2]
    q = np.percentile(latencies, [50, 95]) if latencies else [float("nan")] * 2
    print(f"{done + len(errors)} requests of a {args.seconds:g}-s mp3 from {args.clients} clients in {wall:.1f} s "
          f"on loopback")
    print(f"  throughput   {done / wall:6.2f} requests/s ({done * args.seconds / wall:.0f} s of audio per second)")
    print(f"  latency      p50 {q[0]:.3f} s, p95 {q[1]:.3f} s, max {max(latencies, default=float('nan')):.3f} s, "
          f"mean {statistics.fmean(latencies) if latencies else float('nan'):.3f} s")
    print(f"  errors       {len(errors)}")
    for e in errors[:5]:
        print(f"    {e}")
    if mem:
        print(f"  server RSS   {mem[0]:.0f} MB after warm-up, {half[-1] if half else mem[0]:.0f} MB half-way, "
              f"{mem[-1]:.0f} MB at the end, {max(mem):.0f} MB peak")
    return 1 if errors else 0


# ------------------------------------------------------------------------------------------------------------------
# abuse: what a misbehaving client may hold, against a second server with small limits

ABUSE_ARGS = ["--queue", "8", "--timeout", "2", "--body-timeout", "5", "--max-upload-mb", "30"]
QUEUE, BODY_TIMEOUT, HEADER_TIMEOUT, MAX_UPLOAD = 8, 5.0, 10.0, 30_000_000  # HEADER_TIMEOUT: serve's fixed default


def held(pid: int) -> tuple[int, float]:
    """The server's open file descriptors and the MB of disk its open regular files hold (deleted ones included:
    spooled uploads have no name)."""
    fds, blocks = 0, 0
    for name in os.listdir(f"/proc/{pid}/fd"):
        fds += 1
        try:
            st = os.stat(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            blocks += st.st_blocks
    return fds, blocks * 512 / 1e6


PART = b'--bench\r\nContent-Disposition: form-data; name="file"; filename="x.wav"\r\n\r\n'


def head(port: int, length: int | None) -> bytes:
    """The request line and headers of a multipart POST /v1/tag, with Content-Length or chunked (None)."""
    size = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (f"POST /v1/tag HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{size}\r\n"
            "Content-Type: multipart/form-data; boundary=bench\r\n\r\n").encode()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def answered(sock: socket.socket, wait: float) -> bytes:
    """What the server has answered within `wait` s (b"" for nothing yet or a reset)."""
    try:
        if select.select([sock], [], [], wait)[0]:
            return sock.recv(65536)
    except OSError:
        pass
    return b""


def upload_flood(pid: int, port: int, n: int = 40, size: int = 20 << 20) -> dict:
    """`n` uploads of `size` bytes that never finish (the last KiB is held back), opened one after the other."""
    before = held(pid)
    socks, refused = [], 0
    for _ in range(n):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        socks.append(sock)
        sock.sendall(head(port, size) + PART)
        try:
            for _ in range(size // (1 << 20) - 1):
                sock.sendall(b"\x00" * (1 << 20))
        except OSError:
            pass
        refused += answered(sock, 0.2).startswith(b"HTTP/1.1 503")
    time.sleep(0.5)
    during = held(pid)
    for sock in socks:
        sock.close()
    time.sleep(1.0)
    after = held(pid)
    return {"n": n, "mib": size >> 20, "refused": refused, "fds": during[0] - before[0],
            "disk_mb": during[1] - before[1], "left_fds": after[0] - before[0], "left_mb": after[1] - before[1]}


def drip(port: int, prefix: bytes, data: bytes, every: float, limit: float, out: list) -> None:
    """Send `prefix` at once, then `data` a byte every `every` s (then only listen) until the server closes the
    connection or `limit` s pass; appends the seconds until it closed (None: never)."""
    closed = None
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(prefix)
        start = time.monotonic()
        while closed is None and time.monotonic() - start < limit:
            try:
                if select.select([sock], [], [], every)[0]:
                    if not sock.recv(65536):  # an answer (a 408) may come first; the close follows
                        closed = time.monotonic() - start
                elif data:
                    sock.send(data[:1])
                    data = data[1:]
            except OSError:  # reset
                closed = time.monotonic() - start
    out.append(closed)


def slow_clients(port: int, n: int = 6, every: float = 2.0, limit: float = 75.0) -> dict:
    """`n` clients dripping their headers and `n` dripping a body, a byte every `every` s, all at once."""
    headers = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Pad: {'a' * 60}\r\n\r\n".encode()
    cases = {"headers": (b"", headers), "body": (head(port, 100_000), PART + b"\x00" * 100)}
    results = {"headers": [], "body": []}
    threads = [threading.Thread(target=drip, args=(port, *cases[kind], every, limit, results[kind]))
               for kind in cases for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def endless_chunked(port: int, limit_bytes: int = 300_000_000) -> dict:
    """A chunked upload past the size limit: how much the server takes before it closes the connection."""
    frame = chunk(b"\x00" * (1 << 16))
    sent, start = 0, time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head(port, None) + chunk(PART))
        try:
            while sent < limit_bytes:
                sock.sendall(frame)
                sent += len(frame)
            closed = False
        except OSError:
            closed = True
        status = answered(sock, 2.0)[:12].decode("latin-1")
    return {"sent_mb": sent / 1e6, "closed": closed, "status": status, "seconds": time.monotonic() - start}


def wav(seconds: float, sr: int = 22050) -> bytes:
    """A mono 16-bit WAV of a tone with noise (the stdlib writes it at once; an mp3 of minutes takes a while)."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(len(t))
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes((x * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def after_a_timeout(url: str, short: bytes) -> dict:
    """A 600-s file that runs past --timeout 2, then a 10-s one: does the model still chew on the first?"""
    with httpx.Client(base_url=url, timeout=60) as client:
        first = client.post("/v1/tag", files={"file": ("long.wav", wav(600.0))}, params={"taggram": "false"})
        start = time.perf_counter()
        second = client.post("/v1/tag", files={"file": ("song.mp3", short)}, params={"taggram": "false"})
        return {"first": first.status_code, "second": second.status_code, "second_s": time.perf_counter() - start}


def foreign_pages(url: str, port: int, short: bytes) -> dict:
    """A rebound DNS name (Host) and another site's form post (Origin), as a browser would send them."""
    with httpx.Client(base_url=url, timeout=60) as client:
        host = client.get("/healthz", headers={"Host": f"rebound.example:{port}"}).status_code
        origin = client.post("/v1/tag", files={"file": ("song.mp3", short)},
                             headers={"Origin": "http://evil.example"}).status_code
        own = client.post("/v1/tag", files={"file": ("song.mp3", short)}, params={"taggram": "false"},
                          headers={"Origin": url}).status_code
    return {"host": host, "origin": origin, "own": own}


def run_abuse(model: str, song: bytes, tmp: str) -> int:
    """Each abuse case against a fresh server; prints what it held and returns the count of broken rules."""
    proc, url = start_server(model, ABUSE_ARGS, env=dict(os.environ, TMPDIR=tmp))
    port = int(url.rsplit(":", 1)[1])
    try:
        flood = upload_flood(proc.pid, port)
        slow = slow_clients(port)
        chunked = endless_chunked(port)
        timed_out = after_a_timeout(url, song)
        foreign = foreign_pages(url, port, song)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    return report_abuse(flood, slow, chunked, timed_out, foreign, leftovers=list(Path(tmp).glob("samplecnn-serve-*")))


def report_abuse(flood, slow, chunked, timed_out, foreign, leftovers) -> int:
    """Prints one line per case, ok or FAIL; returns the count of FAILs."""
    def seconds(values):
        return ", ".join("open" if v is None else f"{v:.1f}" for v in values) + " s"

    def closed_within(values, limit):
        return all(v is not None and v < limit + 3 for v in values)

    kept = flood["n"] - flood["refused"]
    checks = [
        (kept <= QUEUE + 1 and flood["left_mb"] < 1,
         f"{flood['n']} unfinished {flood['mib']} MiB uploads ({QUEUE + 1} allowed): {kept} held, {flood['refused']} "
         f"refused with 503; server +{flood['fds']} fds, +{flood['disk_mb']:.0f} MB of disk (after the clients "
         f"left: {flood['left_fds']:+d} fds, {flood['left_mb']:+.0f} MB)"),
        (closed_within(slow["headers"], HEADER_TIMEOUT),
         f"{len(slow['headers'])} clients dripping headers (a byte every 2 s) closed after "
         f"{seconds(slow['headers'])} (limit {HEADER_TIMEOUT:g} s)"),
        (closed_within(slow["body"], BODY_TIMEOUT),
         f"{len(slow['body'])} clients dripping a body closed after {seconds(slow['body'])} "
         f"(limit {BODY_TIMEOUT:g} s)"),
        (chunked["closed"] and chunked["sent_mb"] < 2 * MAX_UPLOAD / 1e6,
         f"endless chunked upload ({MAX_UPLOAD / 1e6:g} MB limit): {chunked['status'] or 'no answer'}, connection "
         f"{'closed' if chunked['closed'] else 'still open'} after {chunked['sent_mb']:.0f} MB sent"),
        (timed_out["first"] == 504 and timed_out["second"] == 200 and timed_out["second_s"] < 1.5,
         f"600-s file past --timeout 2: {timed_out['first']}; the next 10-s file: {timed_out['second']} in "
         f"{timed_out['second_s']:.2f} s"),
        ((foreign["host"], foreign["origin"], foreign["own"]) == (400, 403, 200),
         f"Host rebound.example: {foreign['host']}; POST with Origin evil.example: {foreign['origin']}; from the "
         f"service's own page: {foreign['own']}"),
        (not leftovers, f"scratch folders left after shutdown: {len(leftovers)}"),
    ]
    print("abuse cases (a second server: " + " ".join(ABUSE_ARGS) + ")")
    for ok, line in checks:
        print(f"  {'ok  ' if ok else 'FAIL'} {line}")
    return sum(not ok for ok, _ in checks)


if __name__ == "__main__":
    sys.exit(main())
