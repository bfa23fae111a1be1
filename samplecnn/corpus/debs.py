"""Getting a package's files without installing it: `apt-get download` (or a local .deb) and `dpkg-deb -x`.

Neither needs root nor touches the system: apt-get download only fetches the candidate version's .deb into the
current folder, and dpkg-deb -x unpacks it into a folder of our choosing. Both are plain Debian tools, called as
subprocesses; a failure becomes one SampleCNNError line with the tool's own last message.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from ..errors import SampleCNNError

__all__ = ["fields", "local_debs", "candidate_versions", "versions_to_build", "download", "extract"]


def _run(cmd: list[str], what: str, cwd: str | os.PathLike | None = None) -> str:
    if shutil.which(cmd[0]) is None:
        raise SampleCNNError(f"{what} needs `{cmd[0]}` (Debian's {'apt' if cmd[0].startswith('apt') else 'dpkg'})")
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"})
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip() and not ln.startswith("W:")]
        raise SampleCNNError(f"{what} failed: {lines[-1].strip() if lines else f'exit status {proc.returncode}'}")
    return proc.stdout


def fields(deb: Path) -> tuple[str, str]:
    """(Package, Version) from the .deb's control file."""
    out = _run(["dpkg-deb", "--field", str(deb), "Package", "Version"], f"reading {deb}")
    values = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return values.get("Package", "").strip(), values.get("Version", "").strip()


def local_debs(folder: str | os.PathLike, wanted: list[str]) -> tuple[dict[str, tuple[Path, str]], list[str]]:
    """{package: (.deb, version)} for the wanted packages found in `folder`, and the names of the other packages
    there (ignored: only the recipe's packages ever enter the corpus)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SampleCNNError("is not a folder", folder)
    found: dict[str, tuple[Path, str]] = {}
    others = []
    for deb in sorted(folder.glob("*.deb")):
        name, version = fields(deb)
        if name not in wanted:
            others.append(name or deb.name)
        elif name in found:
            raise SampleCNNError(f"two .deb files for {name}: {found[name][0].name} and {deb.name}; keep one", folder)
        else:
            found[name] = (deb, version)
    missing = [n for n in wanted if n not in found]
    if missing:
        raise SampleCNNError(f"no .deb for {', '.join(missing)} (apt-get download {' '.join(missing)})", folder)
    return found, others


def candidate_versions(packages: list[str]) -> dict[str, str]:
    """{package: the version `apt-get download` would fetch now}; one apt-cache call (it reads apt's lists, no
    network; its cost does not grow with the number of packages)."""
    if not packages:
        return {}
    out = _run(["apt-cache", "show", "--no-all-versions", *packages], "apt-cache show")
    versions, name = {}, None
    for line in out.splitlines():
        if line.startswith("Package:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("Version:") and name is not None:
            versions.setdefault(name, line.split(":", 1)[1].strip())
    missing = [p for p in packages if p not in versions]
    if missing:
        raise SampleCNNError(f"apt knows no package {', '.join(missing)} (run `apt-get update` first?)")
    return versions


def versions_to_build(names: list[str], debs: str | os.PathLike | None, log,
                      recipe: str = "the recipe") -> tuple[dict[str, tuple[Path, str]], dict[str, str]]:
    """({package: (.deb, version)} found in `debs`, {package: version to build}) for a corpus recipe's packages:
    the local .deb files' versions with `debs`, else apt's candidates. Other .deb files in `debs` are ignored, and
    `log` says so."""
    if debs is None:
        return {}, candidate_versions(names)
    local, others = local_debs(debs, names)
    if others:
        log(f"ignoring {len(others)} .deb file(s) of packages outside {recipe} or this run: "
            f"{', '.join(sorted(set(others)))}")
    return local, {name: version for name, (_, version) in local.items()}


def download(package: str, folder: Path) -> Path:
    """Fetch the candidate .deb of `package` into `folder`."""
    before = set(folder.glob("*.deb"))
    _run(["apt-get", "download", package], f"apt-get download {package}", cwd=folder)
    new = [p for p in folder.glob("*.deb") if p not in before and p.name.startswith(package + "_")]
    if len(new) != 1:
        raise SampleCNNError(f"apt-get download {package} left {len(new)} matching .deb files in {folder}")
    return new[0]


def extract(deb: Path, dest: Path) -> None:
    """Unpack the files of `deb` under `dest` (dpkg-deb -x: no maintainer scripts, no database)."""
    dest.mkdir(parents=True, exist_ok=True)
    _run(["dpkg-deb", "-x", str(deb), str(dest)], f"extracting {deb.name}")
