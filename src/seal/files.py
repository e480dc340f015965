"""Files read back later are checked against what was written: one hash, one integrity check."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

BLOCK = 1 << 20


def sha256(chunks: Iterable[bytes]) -> str:
    """The hex sha256 of the chunks, in order."""
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file's content, read a block at a time."""
    with open(path, "rb") as f:
        return sha256(iter(lambda: f.read(BLOCK), b""))


def written(directory: Path) -> dict[str, dict]:
    """Each file under `directory` (by its relative name): its size and sha256, what `damage` checks against."""
    return {
        str(f.relative_to(directory)): {"size": f.stat().st_size, "sha256": file_sha256(f)}
        for f in sorted(directory.rglob("*"))
        if f.is_file()
    }


def damage(directory: Path, recorded: dict[str, dict], names: Iterable[str] | None = None) -> str | None:
    """What is wrong with the files of `directory` (those `names`, else all) against `written`'s record of them:
    one missing, cut short or changed; None when each is as written."""
    for name in recorded if names is None else names:
        expected, path = recorded[name], directory / name
        if not path.is_file():
            return f"{path} is missing"
        if path.stat().st_size != expected["size"]:
            return f"{path} has {path.stat().st_size} bytes where {expected['size']} were written"
        if file_sha256(path) != expected["sha256"]:
            return f"{path} differs from what was written (sha256)"
    return None
