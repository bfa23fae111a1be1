"""Whole-song tagging: stream the audio, cut it into segments, run them in batches, average (as in the papers).

The segmenting rule is in `samplecnn.segments` (and the README).
"""

from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from . import audio, checkpoint, devices, folding, int8, pretrained
from . import precision as precisions
from .errors import SampleCNNError
from .models import SampleCNN
from .prefetch import prefetch
from .segments import SampleCounter, segment_batches
from .workers import usable_cpus

AudioInput = "str | os.PathLike | np.ndarray | torch.Tensor"


def song_scores(taggram: np.ndarray) -> np.ndarray:
    """Song-level scores from segment probabilities `(n_segments, n_tags)`: their mean (Lee et al. 2017). The one
    definition: TagResult, the library index (through Tagger.song_result), evaluate and training's validation."""
    return np.asarray(taggram).mean(axis=0)


def song_embedding(embeddings: np.ndarray) -> np.ndarray:
    """A song's embedding from its segments' `(n_segments, embed_dim)`: their mean (Tagger.embed, the index)."""
    return np.asarray(embeddings).mean(axis=0)


@dataclasses.dataclass
class SegmentOutputs:
    """What the model gives for a batch of segments, from one forward pass: both are float32 numpy arrays."""

    probabilities: np.ndarray  # (n_segments, n_tags) sigmoid outputs (rows of a taggram)
    embeddings: np.ndarray     # (n_segments, embed_dim) penultimate features


@dataclasses.dataclass
class TagResult:
    """Tags of one song: the taggram (segment x tag probabilities) and everything derived from it."""

    tags: list[str]
    taggram: np.ndarray          # (n_segments, n_tags) sigmoid outputs
    segment_starts: np.ndarray   # (n_segments,) seconds
    segment_seconds: float
    duration: float              # seconds of audio decoded
    thresholds: np.ndarray       # (n_tags,) per-tag decision thresholds from the checkpoint
    padded: bool = False         # the song was shorter than one segment and was zero-padded
    path: str | None = None
    model: str | None = None
    embedding: np.ndarray | None = None  # (embed_dim,) song embedding from the same pass (song_embedding)

    @property
    def scores(self) -> np.ndarray:
        """Song-level scores: the mean of the segment probabilities (`song_scores`)."""
        return song_scores(self.taggram)

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        """The k highest-scoring tags with their song-level scores, best first (k <= 0: all tags)."""
        scores = self.scores
        order = np.argsort(-scores, kind="stable")
        return [(self.tags[i], float(scores[i])) for i in (order[:k] if k > 0 else order)]

    @property
    def decisions(self) -> list[str]:
        """Tags whose song-level score reaches the checkpoint's threshold for that tag, best first."""
        scores = self.scores
        return [self.tags[i] for i in np.argsort(-scores, kind="stable") if scores[i] >= self.thresholds[i]]

    def to_dict(self, taggram: bool = True, digits: int = 4) -> dict:
        """A JSON-ready dict; `taggram=False` leaves out the per-segment values."""
        out = {
            "path": self.path,
            "model": self.model,
            "duration": round(self.duration, 3),
            "segments": len(self.segment_starts),
            "padded": self.padded,
            "top": [{"tag": t, "score": round(s, digits)} for t, s in self.top(5)],
            "decisions": self.decisions,
            "scores": {t: round(float(s), digits) for t, s in zip(self.tags, self.scores)},
        }
        if taggram:
            out["segment_seconds"] = round(self.segment_seconds, 4)
            out["segment_starts"] = [round(float(t), 3) for t in self.segment_starts]
            out["taggram"] = np.round(self.taggram, digits).tolist()
        return out


class Tagger:
    """A loaded model plus what its checkpoint says about it (tags, rates, thresholds).

    `model` is the inference copy: BatchNorm folded into the convolutions (exact), in bf16 or int8 when `precision`
    resolves to it (precision.resolve_precision: "auto" uses one only where the checkpoint records that it passed
    the check on real music on this kind of device and was faster there). int8 runs the checkpoint's int8 ONNX
    model (`int8_model`, made by `samplecnn check-precision`) in ONNX Runtime. The model passed in is not modified.
    """

    def __init__(self, model: SampleCNN, info: checkpoint.ModelInfo, name: str | None = None,
                 device: str | torch.device | None = None, batch_size: int | None = None,
                 precision: str | None = "auto", prefetch_blocks: int | None = None,
                 int8_model: str | os.PathLike | None = None):
        self.device = devices.torch_device(device)
        self.precision = precisions.resolve_precision(precision, info.provenance, self.device)
        self.int8 = _int8_model(int8_model, info, asked=precision == "int8") if self.precision == "int8" else None
        if self.precision == "int8" and self.int8 is None:
            self.precision = "fp32"  # "auto" chose int8, but the file its check was made with is not here
        if self.device.type == "cpu":
            devices.tune_malloc()  # activations are reused, not page-faulted in anew per segment
        self.model = folding.inference_copy(model, "bf16" if self.precision == "bf16" else "fp32",
                                            self.device.type).to(self.device)
        self.info = info
        self.name = name
        # CPU: fp32 gains nothing from batches over 1 once activations are reused (tune_malloc), and batch 1 keeps
        # memory lowest; bf16 and int8 gain from batch 8 (their kernels want more rows per call; bf16 planar loses
        # again at 16). GPUs want large batches.
        cpu_batch = 1 if self.precision == "fp32" else 8
        self.batch_size = batch_size or (cpu_batch if self.device.type == "cpu" else 64)
        # Blocks (30 s each) decoded ahead in a background thread while the model runs; 0 decodes in line. By default
        # only where a core is free for it (a GPU, or more cores than torch threads): when torch's threads take every
        # core, the decoding thread only takes time from the model (README, Benchmarks: "same + prefetch").
        if prefetch_blocks is None:
            spare_core = usable_cpus() > torch.get_num_threads()
            prefetch_blocks = 2 if self.device.type != "cpu" or spare_core else 0
        self.prefetch_blocks = prefetch_blocks

    @property
    def tags(self) -> list[str]:
        return list(self.info.tags)

    @property
    def sample_rate(self) -> int:
        return self.info.sample_rate

    @property
    def embed_dim(self) -> int:
        return int(self.model.embed_dim)

    @torch.inference_mode()
    def run_segments(self, batch: np.ndarray) -> SegmentOutputs:
        """The model on a batch of segments, `(n, segment_samples)` float32 mono at the model's rate: one forward
        pass giving each segment's tag probabilities and its embedding. Every path that runs the model on audio
        (tag, embed, taggram, the library index, the server, evaluate) goes through here, so they cannot disagree;
        the batch is run as given (results can differ in the last bits between batch compositions)."""
        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim != 2 or batch.shape[1] != self.info.segment_samples:
            raise ValueError(f"run_segments wants (n, {self.info.segment_samples}) segments, got {batch.shape}")
        if self.int8 is not None:
            probabilities, embeddings = self.int8(batch)
            return SegmentOutputs(probabilities=probabilities, embeddings=embeddings)
        x = torch.from_numpy(batch).to(self.device).unsqueeze(1)
        embeddings = self.model.embed(x)
        logits = self.model.classifier(embeddings)  # == model(x) in eval mode (its dropout does nothing)
        return SegmentOutputs(probabilities=torch.sigmoid(logits.float()).cpu().numpy(),
                              embeddings=embeddings.float().cpu().numpy())

    def tag(self, audio_in: AudioInput, sr: int | None = None, hop: float | None = None,
            cancel: threading.Event | None = None) -> TagResult:
        """Tag a file path or an in-memory signal (give its `sr`). `hop` in seconds overlaps segments. Setting
        `cancel` from another thread stops the work at the next segment batch with `Cancelled` (the server's
        timeout: an answer nobody waits for must not hold the model)."""
        hop_samples = self.hop_samples(hop)
        outputs, n_samples = self._run(self._blocks(audio_in, sr), hop_samples, cancel)
        path = None if isinstance(audio_in, (np.ndarray, torch.Tensor)) else os.fspath(audio_in)
        return self.song_result(outputs.probabilities, n_samples, hop_samples, path=path,
                                embeddings=outputs.embeddings)

    def song_result(self, probabilities: np.ndarray, n_samples: int, hop_samples: int | None = None,
                    path: str | None = None, embeddings: np.ndarray | None = None) -> TagResult:
        """A song's TagResult from its segments' probabilities (`run_segments`, in order), the number of samples
        decoded at the model's rate and the hop the segments were cut with (None: one segment, no overlap). The
        one place that turns segment outputs into a song: scores (`song_scores`), decisions (the checkpoint's
        thresholds), duration and `padded` (shorter than one segment) are what `tag` and the library index give;
        the segments' `embeddings`, when given, become the song embedding (what tag packs score)."""
        hop = self.info.segment_samples if hop_samples is None else hop_samples
        seg = self.info.segment_samples
        probabilities = np.asarray(probabilities, dtype=np.float32)
        return TagResult(
            tags=self.tags, taggram=probabilities,
            segment_starts=np.arange(len(probabilities)) * hop / self.sample_rate,
            segment_seconds=seg / self.sample_rate, duration=n_samples / self.sample_rate,
            thresholds=np.asarray(self.info.thresholds, dtype=np.float32), padded=n_samples < seg,
            path=path, model=self.name, embedding=None if embeddings is None else song_embedding(embeddings))

    def embed(self, audio_in: AudioInput, sr: int | None = None, hop: float | None = None,
              per_segment: bool = False) -> np.ndarray:
        """The song's embedding (mean of the segments' penultimate features), or one row per segment."""
        outputs, _ = self._run(self._blocks(audio_in, sr), self.hop_samples(hop))
        return outputs.embeddings if per_segment else song_embedding(outputs.embeddings)

    def taggram(self, signal: np.ndarray, hop: float | None = None) -> np.ndarray:
        """Segment probabilities of a mono signal already at the model's rate, without the checks `tag` makes
        (a dataset's silent clip still gets the model's output): for evaluation."""
        outputs, _ = self._run([signal], self.hop_samples(hop))
        return outputs.probabilities

    def hop_samples(self, hop: float | None) -> int:
        """The hop of `hop` seconds in samples (None: one segment, no overlap); out of range, the --hop error."""
        if hop is None:
            return self.info.segment_samples
        samples = int(round(hop * self.sample_rate))
        if not 0 < samples <= 10 * self.info.segment_samples:
            raise SampleCNNError(f"--hop must be between {1 / self.sample_rate:.5f} s and "
                                 f"{10 * self.info.segment_samples / self.sample_rate:.1f} s, got {hop}")
        return samples

    def _blocks(self, audio_in: AudioInput, sr: int | None) -> Iterable[np.ndarray]:
        if isinstance(audio_in, (np.ndarray, torch.Tensor)):
            samples = audio_in.detach().cpu().numpy() if isinstance(audio_in, torch.Tensor) else audio_in
            if sr is None:
                raise SampleCNNError("an in-memory signal needs its sample rate: tag(array, sr=...)")
            return [audio.to_mono_resampled(samples, sr, self.sample_rate)]
        stream = audio.stream(audio_in, sr=self.sample_rate)
        return prefetch(stream, self.prefetch_blocks) if self.prefetch_blocks else stream

    def _run(self, blocks: Iterable[np.ndarray], hop: int,
             cancel: threading.Event | None = None) -> tuple[SegmentOutputs, int]:
        """`run_segments` on every segment of the stream, batch by batch; returns (outputs, samples seen)."""
        probabilities, embeddings = [], []
        counter = SampleCounter()
        try:
            for batch in segment_batches(counter.count(blocks), self.info.segment_samples, hop, self.batch_size):
                if cancel is not None and cancel.is_set():
                    raise Cancelled
                out = self.run_segments(batch)
                probabilities.append(out.probabilities)
                embeddings.append(out.embeddings)
        finally:
            close = getattr(blocks, "close", None)
            if close is not None:  # stops a prefetching thread / closes the file when the model raised
                close()
        return SegmentOutputs(np.concatenate(probabilities), np.concatenate(embeddings)), counter.n


def _int8_model(path: str | os.PathLike | None, info: checkpoint.ModelInfo, asked: bool) -> int8.Int8Model | None:
    """The int8 model to run: asked for explicitly, whatever file is there; chosen by "auto", only the very file
    the checkpoint's passing int8 check was made with (its hash), else None (fp32)."""
    if asked:
        if path is None:
            raise SampleCNNError("--precision int8 needs the checkpoint's int8 model (`samplecnn check-precision "
                                 "--calibrate` makes it beside the checkpoint)")
        return int8.Int8Model(path, torch.get_num_threads())
    record = precisions.passing_record(info.provenance, "int8", "cpu")
    if path is None or record is None or not Path(path).is_file() or record.get("int8_file") != int8.file_digest(path):
        return None
    return int8.Int8Model(path, torch.get_num_threads())


class Cancelled(Exception):
    """Tagger.tag stopped because its `cancel` event was set."""


def load(name_or_path: str | os.PathLike = "default", device: str | torch.device | None = None,
         batch_size: int | None = None, precision: str | None = "auto") -> Tagger:
    """Load a registered model by name (see `samplecnn models`) or a checkpoint file by path. `precision`: "auto"
    (bf16 or int8 only where this checkpoint passed the check on this kind of device, else fp32), "fp32", "bf16"
    or "int8" (the int8 model beside the checkpoint: int8.int8_path)."""
    path = pretrained.checkpoint_path(name_or_path)
    model, info = checkpoint.read(path)
    name = str(name_or_path) if str(name_or_path) in pretrained.MODELS else Path(path).stem
    return Tagger(model, info, name=name, device=device, batch_size=batch_size, precision=precision,
                  int8_model=int8.int8_path(path))
