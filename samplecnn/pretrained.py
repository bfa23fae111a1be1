"""Registry of the models that ship with samplecnn (the package's assets/ folder), by name."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import SampleCNNError

ASSETS = Path(__file__).parent / "assets"

# name -> (checkpoint file in assets/, one-line description); the README's model card describes `default`.
MODELS: dict[str, tuple[str, str]] = {
    "default": ("default.safetensors", "SampleCNN 3^9 distilled from musicnn on 19.4 h of Debian game music "
                                       "(MTAT top-50 tags; research and personal use)"),
}


def available() -> dict[str, str]:
    """Registered models whose file is installed, name -> description."""
    return {name: desc for name, (file, desc) in MODELS.items() if (ASSETS / file).is_file()}


def checkpoint_path(name_or_path: str | os.PathLike) -> Path:
    """A registered name or an existing file -> the checkpoint's path; anything else is a one-line error."""
    key = os.fspath(name_or_path)
    if key in MODELS:
        path = ASSETS / MODELS[key][0]
        if not path.is_file():
            raise SampleCNNError(f"model {key!r} is registered but its file {path} is missing; reinstall samplecnn")
        return path
    path = Path(key).expanduser()
    if path.exists():
        return path
    if os.sep in key or key.endswith(".safetensors"):
        raise SampleCNNError("no such checkpoint file", path)
    names = ", ".join(MODELS) or "none installed yet"
    raise SampleCNNError(f"unknown model {key!r}: not a file and not a registered name ({names})")
