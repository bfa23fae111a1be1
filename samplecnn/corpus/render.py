"""Rendering a Piece to audio with FluidSynth (pyfluidsynth, through pretty_midi's per-instrument renderer).

Why not the fluidsynth command line: on music21's MIDI of a string quartet it never stopped and wrote 18 GB. Here
every note has an end in seconds that the piece was cut to beforehand (Piece.cut), and pretty_midi renders exactly
up to the last note plus one second of release, so a render cannot outgrow its cap.

Each render gets a synthesizer of its own, reset before every part: FluidSynth's reverb and chorus keep state
that its system reset does not clear (a render that followed another differed from a fresh one), so sharing one
would make a render depend on what was rendered before it, and a resumed run would not write what an uninterrupted
one does. Loading the soundfont costs 0.2 s (FluidR3_GM, 148 MB, from the page cache) against seconds of rendering.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import SampleCNNError
from .piece import Piece
from .soundfonts import Soundfont

__all__ = ["SAMPLE_RATE", "Voice", "render"]

SAMPLE_RATE = 22050   # what the training cache stores: renders are written at it, never resampled


@dataclass(frozen=True)
class Voice:
    """How one part of a piece is played."""
    program: int          # General MIDI program, or the kit number for drums (bank 128)
    is_drum: bool
    transpose: int = 0    # semitones
    gain: float = 1.0


def render(piece: Piece, voices: list[Voice], sf: Soundfont) -> np.ndarray:
    """Mono float32 at SAMPLE_RATE: each part rendered alone, scaled by its gain, summed."""
    import fluidsynth
    import pretty_midi

    if len(voices) != len(piece.parts):
        raise ValueError("one voice per part")
    synth = fluidsynth.Synth(samplerate=float(SAMPLE_RATE))
    try:
        sfid = synth.sfload(sf.path)
        if sfid < 0:
            raise SampleCNNError("FluidSynth cannot load this soundfont", sf.path)
        out = np.zeros(0, dtype=np.float64)
        for part, voice in zip(piece.parts, voices):
            inst = pretty_midi.Instrument(program=voice.program, is_drum=voice.is_drum)
            for start, end, pitch, velocity in part.notes:
                key = pitch if voice.is_drum else pitch + voice.transpose
                if 0 <= key <= 127 and end > start:
                    inst.notes.append(pretty_midi.Note(velocity=int(velocity), pitch=int(key), start=float(start),
                                                       end=float(end)))
            if not inst.notes:
                continue
            synth.system_reset()
            wave = inst.fluidsynth(synthesizer=synth, sfid=sfid) * voice.gain
            if len(wave) > len(out):
                out = np.pad(out, (0, len(wave) - len(out)))
            out[: len(wave)] += wave
    finally:
        synth.delete()
    return out.astype(np.float32)


def finish(audio: np.ndarray, peak: float) -> np.ndarray:
    """Scaled so that its peak is `peak` (renders differ in loudness on purpose); zeros stay zeros."""
    top = float(np.max(np.abs(audio))) if audio.size else 0.0
    return audio if top == 0.0 else (audio * (peak / top)).astype(np.float32)


def is_silent(audio: np.ndarray) -> bool:
    """Nothing sounds: FluidSynth's output (16-bit scale, before `finish`) never reaches one step of 16 bits."""
    return audio.size == 0 or float(np.max(np.abs(audio))) < 1.0


def write_flac(path, audio: np.ndarray) -> None:
    """16-bit mono FLAC at SAMPLE_RATE, atomically (a killed run never leaves half a file under its name)."""
    import soundfile

    from ..fileio import atomic_path

    with atomic_path(path, overwrite=True) as tmp:
        soundfile.write(str(tmp), np.clip(audio, -1.0, 1.0), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
