"""`samplecnn index --ray`: the same index with its decoding and its model on a Ray cluster.

Only where the work runs differs from the decoder processes of index.py: the walk, the plan, the skipping of
unchanged files, the decoding and cutting (decode.messages), the forward pass (Tagger.run_segments) and the commits
(index._Committing: one transaction per track, in this process, the one that holds the library) are the same code.

Ray Core tasks and actors, not Ray Data: a file's segments must come back together to one commit, retried as one
file, and the index must say which file failed and why; Ray Data's rows would need a group-by over the whole stream
and hide per-file failures in its own retries.

- Each file is one decode task, a Ray streaming generator running decode.messages: a small ("segments", n) header,
  then the chunk of n segments as an object of its own, ...; then the file's last message. The chunks stay in the
  object store of the node that decoded them: this process handles only their references and the small messages.
- Model actors (one per GPU, else one per CPU core, or `actors`) load the checkpoint from bytes this process put in the
  object store, so no node needs the model file; an actor that dies is replaced and its call given to the new one
  (scoring a chunk twice gives the same numbers). Chunks are given to them as call arguments: Ray moves a chunk to
  the actor's node while the actor's previous call runs (two calls each in flight).
- Back-pressure: a decode task runs at most one chunk ahead of what this process took from it (Ray's generator
  back-pressure), and this process takes from a file only while fewer than `window` of its segments wait for the
  model (index.window_segments): decoded audio in the object store stays under decoders x (window + one chunk)
  segments, whatever the tracks' lengths.
- Faults: a decode worker that dies is retried by Ray; the retried generator replays the file and Ray skips the
  objects already delivered, so no segment arrives twice. A file that kills its worker on every try is recorded as
  failed. A track is committed once, when all its segments are back: never twice, never half. This process killed leaves
  the library as any killed index does (store.py), and a Ray it started here goes with it.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from .. import inference, pretrained
from ..errors import SampleCNNError
from ..workers import usable_cpus
from . import decode, index, store

_POLL_S = 1.0
_TASK_RETRIES = 2          # a decode task whose worker died runs again this many times (Ray's max_retries)
_CALL_RETRIES = 3          # a call whose actor died goes to a fresh actor this many times
_CALLS_PER_ACTOR = 2       # one running, one whose chunks move to the actor meanwhile
_AHEAD_OBJECTS = 2         # objects a decode task may yield that this process has not taken: one header + chunk


# Ray reads this once, on import: "0" makes it take 127.0.0.1 as this node's address (it otherwise replaces a
# loopback address by the machine's own, and listens there), so that a Ray started here serves only this machine.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def check_available(address: str) -> None:
    """A one-line error, before anything runs, where Ray is not installed. `address` "local": the Ray this process
    will start listens on 127.0.0.1 only."""
    if address == "local":
        for name, value in LOOPBACK_ENV.items():
            os.environ.setdefault(name, value)
    try:
        import ray  # noqa: F401
    except ImportError:
        raise SampleCNNError("--ray needs Ray, which is not installed: pip install 'samplecnn[ray]'") from None


def connect(address: str) -> bool:
    """Join the cluster at `address` ("auto": the one `ray start` made on this machine), or start a Ray on this
    machine ("local", bound to 127.0.0.1). False when this process was already connected (then it stays so)."""
    import ray

    if ray.is_initialized():
        return False
    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
    try:
        if address == "local":
            # "local": a new Ray even where one runs already (ray.init alone would join that one)
            ray.init(address="local", num_cpus=usable_cpus(), _node_ip_address="127.0.0.1", **quiet)
        else:
            ray.init(address=address, **quiet)
    except (ConnectionError, ValueError, RuntimeError) as e:
        where = "start Ray on this machine" if address == "local" else f"join the Ray cluster at {address}"
        raise SampleCNNError(f"cannot {where} ({_first_line(e)})") from None
    return True


class ModelActor:
    """The model on one GPU or on some of a node's cores: Tagger.run_segments over the chunks it is given."""

    def __init__(self, checkpoint: bytes, suffix: str, device: str | None, batch_size: int | None,
                 threads: int | None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        with tempfile.TemporaryDirectory(prefix="samplecnn-model-") as folder:
            path = Path(folder, "model" + suffix)
            path.write_bytes(checkpoint)
            self.tagger = inference.load(path, device=device, batch_size=batch_size)

    def device(self) -> str:
        return str(self.tagger.device)

    def score(self, *chunks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, embeddings) of the chunks' segments, in order, in forward passes of the Tagger's batch."""
        x = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
        step = self.tagger.batch_size
        outs = [self.tagger.run_segments(x[i:i + step]) for i in range(0, len(x), step)]
        return (np.concatenate([o.probabilities for o in outs]), np.concatenate([o.embeddings for o in outs]))


@dataclasses.dataclass(eq=False)
class _File:
    """A file whose decode task runs: its generator, the size of the chunk announced by the last header (its object
    comes next), how many chunks were taken, and the model's outputs per chunk."""

    gen: object
    announced: int | None = None
    chunks: int = 0
    outputs: dict = dataclasses.field(default_factory=dict)
    decoding: bool = True


@dataclasses.dataclass(eq=False)
class _Call:
    actor: object
    owners: list  # (job, chunk number, segments)
    refs: list    # the chunks' object refs, given again to a fresh actor if this one died
    tries: int = 1


class RayPipeline(index._Committing):
    """Decode tasks -> chunks in the object store -> model actors -> outputs here -> one commit per track."""

    def __init__(self, tagger: inference.Tagger, lib: store.Library, record: store.Model, jobs: list,
                 taggrams: bool, progress: bool, report: index.Report, address: str, model: str,
                 decoders: int | None, actors: int | None, device: str | None, batch_size: int | None):
        super().__init__(tagger, jobs, progress, report, lib=lib, record=record, taggrams=taggrams)
        self.address, self.model, self.device, self.batch_size = address, model, device, batch_size
        self.n_decoders, self.n_actors = decoders, actors
        self.queue = list(range(len(jobs)))[::-1]  # popped from the end: in walk order
        self.files: dict[int, _File] = {}
        # (job, chunk number, object ref, segments) waiting for an actor, oldest first
        self.pending: collections.deque = collections.deque()
        self.pending_rows = 0
        self.calls: dict = {}    # object ref of a call's result -> _Call
        self.actors: list = []
        self.calls_of: dict = {}  # actor -> its calls in flight

    def run(self) -> None:
        import ray

        started = connect(self.address)
        self.progress = self._progress_bar()
        try:
            self._start_actors(ray)
            self.decode = ray.remote(decode.ray_task).options(
                num_cpus=1, max_retries=_TASK_RETRIES, retry_exceptions=False,
                _generator_backpressure_num_objects=_AHEAD_OBJECTS)
            self._submit_decodes()  # the first files decode while the actors start and load the model
            self._await_actors(ray)
            self.window = index.window_segments(self.call_segments, self.n_decoders)
            while self.unfinished:
                self._submit_decodes()
                self._wait(ray)
                self._dispatch()
                self._finish_ready()
        finally:
            self.progress.close()
            for actor in self.actors:
                ray.kill(actor)
            if started:
                ray.shutdown()

    # -- placement --

    def _start_actors(self, ray) -> None:
        """One actor per GPU where the cluster has GPUs (and --device is not cpu), else one per CPU core, each with
        one torch thread (`actors` given: spread over the nodes, each node's cores shared among its actors' threads).
        A CPU actor reserves no CPU of Ray's: like the model of the single-machine index, the actors take the node's
        cores and the decoding (a fifth of the model's time) runs beside them. One thread each, because torch's
        threads wait for each other at every layer and Ray runs its workers at niceness 15: any process of normal
        priority that takes a core for a moment (the raylet, this process) stalls all of an actor's threads. On 2
        cores one actor with 2 threads indexed 42 % slower than the single-machine index, two with one 4 %
        (README, Benchmarks)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        nodes = [n for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU", 0) >= 1]
        if not nodes:
            raise SampleCNNError(f"the Ray cluster at {self.address} has no node with a CPU")
        gpus = int(sum(n["Resources"].get("GPU", 0) for n in nodes))
        use_gpus = gpus > 0 and (self.device or "cuda").startswith("cuda")
        cap = 16 if use_gpus else 4
        if self.n_decoders is None:
            self.n_decoders = sum(max(1, min(cap, int(n["Resources"]["CPU"]) - 1)) for n in nodes)
        self.n_decoders = min(self.n_decoders, len(self.jobs))
        source = pretrained.checkpoint_path(self.model)
        checkpoint = ray.put(Path(source).read_bytes())
        actor_class = ray.remote(ModelActor)
        self.specs = {}  # actor -> what makes another like it (a dead one is replaced by this process, not Ray)
        if use_gpus:
            for _ in range(self.n_actors or gpus):
                self._new_actor(actor_class.options(num_gpus=1, num_cpus=1),
                                (checkpoint, source.suffix, self.device, self.batch_size, None))
        else:
            if self.n_actors:
                homes = [nodes[i % len(nodes)] for i in range(self.n_actors)]
            else:
                homes = [node for node in nodes for _ in range(int(node["Resources"]["CPU"]))]
            for node in homes:
                sharing = sum(h is node for h in homes)
                threads = max(1, int(node["Resources"]["CPU"]) // sharing)
                where = NodeAffinitySchedulingStrategy(node["NodeID"], soft=True)
                self._new_actor(actor_class.options(num_cpus=0, scheduling_strategy=where),
                                (checkpoint, source.suffix, "cpu", self.batch_size, threads))

    def _await_actors(self, ray) -> None:
        """Wait until every actor holds the model (a clear error where one cannot), and size the calls for them."""
        try:
            devices = ray.get([a.device.remote() for a in self.actors])
        except ray.exceptions.RayError as e:
            raise SampleCNNError(f"the model actors could not start ({_first_line(e)})") from None
        # a call's size: a GPU's batch (its actors batch segments across files), else one chunk
        gpu = any(d.startswith("cuda") for d in devices)
        self.call_segments = self.batch_size or (64 if gpu else index._CHUNK_SEGMENTS)

    def _new_actor(self, options, args: tuple):
        actor = options.remote(*args)
        self.actors.append(actor)
        self.specs[actor] = (options, args)
        self.calls_of[actor] = 0
        return actor

    def _replace(self, ray, actor):
        """A fresh actor in place of one that died (its node gone, its process killed)."""
        self.actors.remove(actor)
        options, args = self.specs.pop(actor)
        del self.calls_of[actor]
        ray.kill(actor)
        self.report.actor_restarts += 1
        return self._new_actor(options, args)

    # -- decoding --

    def _submit_decodes(self) -> None:
        while self.queue and sum(f.decoding for f in self.files.values()) < self.n_decoders:
            job = self.queue.pop()
            j = self.jobs[job]
            known = j.known[2] if j.known else None
            self.active[job] = index._InFlight(j.path, known)
            self.files[job] = _File(self.decode.remote(j.path, known, self.record.sample_rate,
                                                       self.record.segment_samples, index._CHUNK_SEGMENTS,
                                                       self.hop_samples))

    def _wait(self, ray) -> None:
        """Wait for the next object of a file this process has room for, or a call's result; take what is ready."""
        takers = {f.gen: job for job, f in self.files.items()
                  if f.decoding and (f.announced is not None or self.active[job].rows_pending < self.window)}
        waitables = list(takers) + list(self.calls)
        if not waitables:
            return
        ready, _ = ray.wait(waitables, num_returns=1, timeout=_POLL_S, fetch_local=False)
        if ready:
            ready, _ = ray.wait(waitables, num_returns=len(waitables), timeout=0, fetch_local=False)
        for r in ready:
            if r in self.calls:
                self._scored(ray, r)
            else:
                self._take(ray, takers[r])

    def _take(self, ray, job: int) -> None:
        f, st = self.files[job], self.active[job]
        try:
            ref = next(f.gen)
            if f.announced is not None:  # the chunk its header announced
                self.pending.append((job, f.chunks, ref, f.announced))
                st.rows_pending += f.announced
                self.pending_rows += f.announced
                self.report.peak_segments_in_flight = max(self.report.peak_segments_in_flight, self.pending_rows)
                f.chunks += 1
                f.announced = None
                return
            kind, payload = ray.get(ref)
        except StopIteration:
            kind, payload = "error", "the decode task ended without a result"
        except ray.exceptions.RayError as e:
            kind, payload = "error", (f"the decoder process died on this file {1 + _TASK_RETRIES} times "
                                      f"({_first_line(e)})")
        if kind == "segments":
            f.announced = payload
            return
        f.decoding = False
        if kind == "same":
            del self.files[job]
            self._same(job, payload)
        elif kind == "done":
            st.info = payload
        else:
            st.error = payload

    # -- the model --

    def _dispatch(self) -> None:
        """Give waiting chunks to actors with room, oldest first, `call_segments` (at least one chunk) a call."""
        while self.pending:
            actor = min(self.actors, key=self.calls_of.get)
            if self.calls_of[actor] >= _CALLS_PER_ACTOR:
                return
            owners, refs, size = [], [], 0
            while self.pending and size < self.call_segments:
                job, k, ref, n = self.pending.popleft()
                if self.active[job].error is not None:  # failed after sending segments: drop them
                    self._consumed(job, n)
                    continue
                owners.append((job, k, n))
                refs.append(ref)
                size += n
            if refs:
                self._call(_Call(actor, owners, refs))

    def _call(self, call: _Call) -> None:
        self.calls[call.actor.score.remote(*call.refs)] = call
        self.calls_of[call.actor] += 1

    def _scored(self, ray, ref) -> None:
        call = self.calls.pop(ref)
        if call.actor in self.calls_of:
            self.calls_of[call.actor] -= 1
        try:
            probs, embeds = ray.get(ref)
        except ray.exceptions.RayActorError as e:
            if call.tries <= _CALL_RETRIES:
                actor = call.actor if call.actor in self.calls_of else None
                call.actor = self._replace(ray, actor) if actor is not None else min(self.actors,
                                                                                     key=self.calls_of.get)
                call.tries += 1
                self._call(call)
                return
            self._lose(call, f"the model actor died {call.tries} times scoring this file ({_first_line(e)})")
            return
        except ray.exceptions.RayError as e:  # a chunk lost with its node, or a model error
            self._lose(call, f"could not be scored ({_first_line(e)})")
            return
        start = 0
        for job, k, n in call.owners:
            self.files[job].outputs[k] = (probs[start:start + n], embeds[start:start + n])
            self._consumed(job, n)
            start += n

    def _lose(self, call: _Call, reason: str) -> None:
        for job, _, n in call.owners:
            self.active[job].error = reason
            self._consumed(job, n)

    def _consumed(self, job: int, n: int) -> None:
        self.active[job].rows_pending -= n
        self.pending_rows -= n

    # -- commits --

    def _commit(self, st: index._InFlight) -> None:
        job = next(j for j, s in self.active.items() if s is st)
        outputs = self.files[job].outputs
        st.probs = [outputs[k][0] for k in sorted(outputs)]
        st.embeds = [outputs[k][1] for k in sorted(outputs)]
        super()._commit(st)

    def _finished(self, job: int) -> None:
        self.files.pop(job, None)
        super()._finished(job)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__
