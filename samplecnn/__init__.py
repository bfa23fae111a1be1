"""samplecnn: music auto-tagging from the raw waveform with sample-level CNNs.

    import samplecnn
    tagger = samplecnn.load("default")          # or a checkpoint path
    result = tagger.tag("song.mp3")
    print(result.top(5))
"""

__version__ = "0.1.0"

from .errors import AudioError, CheckpointError, SampleCNNError  # noqa: E402
from .inference import Tagger, TagResult, load  # noqa: E402

__all__ = ["load", "Tagger", "TagResult", "SampleCNNError", "AudioError", "CheckpointError", "__version__"]
