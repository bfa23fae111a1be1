"""How songs are cut into the model's input: the sample rate, the segment length, and streamed segmenting.

Free of torch on purpose: the library index's decoder processes import only this, PyAV and soxr, so each starts in
a fraction of a second and holds tens of MB, not torch's hundreds.

Segmenting rule (documented in the README):
- segments of `segment_samples` (59049 = 2.678 s at 22050 Hz) start every `hop` samples (hop = one segment: no
  overlap, as in Lee et al. 2017 and every paper since);
- a tail shorter than a segment is dropped, as in the papers: it is less than 2.7 s of the song;
- a song shorter than one segment is zero-padded on the right to one segment (`TagResult.padded` is True), so a
  one-second jingle still gets tags instead of an error.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

SAMPLE_RATE = 22050
SEGMENT_SAMPLES = 3**10  # 59049 samples = 2.678 s at SAMPLE_RATE (Lee et al. 2017)


class SampleCounter:
    """Counts the samples of the blocks flowing through `count(blocks)`: how much audio was decoded (a song's
    duration, and whether it was shorter than one segment), for Tagger and the index's decoders alike."""

    def __init__(self):
        self.n = 0

    def count(self, blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        for block in blocks:
            self.n += len(block)
            yield block


def segment_batches(blocks: Iterable[np.ndarray], length: int, hop: int, batch_size: int) -> Iterator[np.ndarray]:
    """Cut a stream of 1-D blocks into (batch, length) arrays of segments starting every `hop` samples.

    Only about one segment plus one block is held at a time, so a 2-hour file streams in constant memory. The tail
    shorter than `length` is dropped; a stream shorter than one segment yields one zero-padded segment.
    """
    pending = np.zeros(0, dtype=np.float32)
    batch = np.empty((batch_size, length), dtype=np.float32)
    filled = emitted = skip = 0
    for block in blocks:
        block = np.asarray(block, dtype=np.float32)
        if skip:  # a hop longer than a segment jumps over samples that may span blocks
            dropped = min(skip, len(block))
            block, skip = block[dropped:], skip - dropped
        pending = np.concatenate([pending, block]) if len(pending) else block
        start = 0
        while start + length <= len(pending):
            batch[filled] = pending[start:start + length]
            filled += 1
            start += hop
            if filled == batch_size:
                yield batch.copy()
                emitted += filled
                filled = 0
        skip += max(0, start - len(pending))
        pending = pending[start:]
    if filled:
        emitted += filled
        yield batch[:filled].copy()
    if emitted == 0:
        padded = np.zeros((1, length), dtype=np.float32)
        padded[0, :len(pending)] = pending[:length]
        yield padded
