"""samplecnn: music auto-tagging from the raw waveform with sample-level CNNs.

    import samplecnn
    tagger = samplecnn.load("default")          # or a checkpoint path
    result = tagger.tag("song.mp3")
    print(result.top(5))
"""

__version__ = "0.1.0"

from .errors import AudioError, CheckpointError, SampleCNNError  # noqa: E402

__all__ = ["load", "Tagger", "TagResult", "SampleCNNError", "AudioError", "CheckpointError", "__version__"]

_LAZY = {"load", "Tagger", "TagResult"}


def __getattr__(name: str):
    """`load`, `Tagger` and `TagResult` import torch and PyAV on first use, not at `import samplecnn`: commands that
    need neither (`samplecnn --help`, `models`, `search`...) start in a fraction of the time."""
    if name in _LAZY:
        from . import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'samplecnn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY)
