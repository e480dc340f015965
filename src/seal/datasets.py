"""Data sets by name: `seal data fetch NAME` puts a data set's files in the data directory, each checked
against the sha256 of the manifest shipped with the package (`datasets.json`); a config names a file
as `DATASET:PATH` (`squad:squad_val.json`) and a plain path still names a local file.

The files come from the SEAL release at a pinned commit of its public repository (which ships SQuAD
as the paper groups it and the ARC-AGI files too), or from a local mirror laid out like the data
directory: one folder per data set (`squad/`, `reference-results/`, `arc/`).
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from seal.errors import DataError
from seal.files import file_sha256

MANIFEST = Path(__file__).with_name("datasets.json")
DATA_ENV = "SEAL_DATA"
DOWNLOAD_TIMEOUT_S = 60


@dataclass(frozen=True)
class DataFile:
    path: str  # inside the data set's folder
    sha256: str
    size: int
    source: str  # path in the release repository


@dataclass(frozen=True)
class Dataset:
    name: str
    folder: str  # in the data directory and in a mirror
    description: str
    licence: str
    files: dict[str, DataFile]

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files.values())


def _read_manifest() -> tuple[dict, dict[str, Dataset]]:
    manifest = json.loads(MANIFEST.read_text())
    datasets = {
        name: Dataset(
            name=name,
            folder=spec["folder"],
            description=spec["description"],
            licence=spec["licence"],
            files={path: DataFile(path=path, **entry) for path, entry in spec["files"].items()},
        )
        for name, spec in manifest["datasets"].items()
    }
    return manifest["release"], datasets


RELEASE, DATASETS = _read_manifest()


def data_dir() -> Path:
    """Where fetched data sets live: `$SEAL_DATA`, else `seal/data` in the user's cache directory."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "seal" / "data"


def dataset(name: str) -> Dataset:
    if name not in DATASETS:
        raise DataError(f"no data set {name!r}: the data sets are {', '.join(DATASETS)} (seal data list)")
    return DATASETS[name]


def fetch_command(name: str) -> str:
    return f"seal data fetch {name}"


def locate(ref: str | Path) -> Path:
    """The file a config names: `DATASET:PATH` in the data directory (fetched, or one error naming the
    command that fetches it), anything else a local path as given."""
    text = str(ref)
    name, sep, inside = text.partition(":")
    if not sep or name not in DATASETS:
        return Path(ref)
    spec = DATASETS[name]
    if inside not in spec.files:
        raise DataError(f"{text}: data set {name!r} has no file {inside!r} (seal data list {name} lists them)")
    path = data_dir() / spec.folder / inside
    if not path.is_file() or path.stat().st_size != spec.files[inside].size:
        raise DataError(
            f"{text}: data set {name!r} is not fetched into {data_dir()}: run `{fetch_command(name)}` "
            f"(`{fetch_command(name)} --from DIR` from a local mirror; ${DATA_ENV} sets the data directory)"
        )
    return path


@dataclass(frozen=True)
class Fetched:
    dataset: Dataset
    directory: Path
    copied: int  # files copied or downloaded now
    kept: int  # files already there with the right sha256


def fetch(
    name: str,
    mirror: Path | None = None,
    url: str | None = None,
    progress: Callable[[DataFile], None] | None = None,
) -> Fetched:
    """Every file of a data set into the data directory, from a local `mirror` (laid out like the data
    directory), else from `url` (laid out like the release repository; default: the release's pinned
    commit on GitHub). A file already there with its sha256 is kept, so an interrupted fetch resumes;
    each new file is checked before it takes its place, and a mismatch is one `DataError`."""
    spec = dataset(name)
    if mirror is not None and mirror.resolve() == data_dir().resolve():
        raise DataError(f"{mirror}: the data directory itself, not a mirror to fetch from")
    if mirror is not None and not (mirror / spec.folder).is_dir():
        raise DataError(f"{mirror}: not a data mirror with {name!r} in it (no folder {spec.folder}/)")
    target = data_dir() / spec.folder
    copied = kept = 0
    for entry in spec.files.values():
        path = target / entry.path
        if path.is_file() and path.stat().st_size == entry.size and file_sha256(path) == entry.sha256:
            kept += 1
            continue
        if progress is not None:
            progress(entry)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".part")
        where = _copy(mirror / spec.folder / entry.path, partial) if mirror else _download(url, entry, partial)
        got = file_sha256(partial)
        if got != entry.sha256:
            partial.unlink()
            raise DataError(
                f"{where}: sha256 {got} is not the manifest's {entry.sha256} for {name}:{entry.path} "
                "(a damaged or different file; nothing was put in its place)"
            )
        os.replace(partial, path)
        copied += 1
    return Fetched(dataset=spec, directory=target, copied=copied, kept=kept)


def _copy(source: Path, partial: Path) -> str:
    if not source.is_file():
        raise DataError(f"{source}: missing from the mirror")
    shutil.copyfile(source, partial)
    return str(source)


def _download(url: str | None, entry: DataFile, partial: Path) -> str:
    address = (url or RELEASE["url"]).rstrip("/") + "/" + entry.source
    try:
        with urllib.request.urlopen(address, timeout=DOWNLOAD_TIMEOUT_S) as response, partial.open("wb") as out:
            shutil.copyfileobj(response, out)
    except (urllib.error.URLError, OSError) as err:
        partial.unlink(missing_ok=True)
        reason = getattr(err, "reason", None) or err
        raise DataError(f"{address}: cannot download ({reason}); without internet use --from DIR") from None
    return address
