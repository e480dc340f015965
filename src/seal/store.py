"""A run is a directory: its resolved config, an SQLite store of every record, and its outputs.

Records are JSON objects filed under (kind, key). Each batch of records is written in one
transaction, so a run killed at any moment holds only whole batches; re-running the same
command reads what is there and does only the rest.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from seal.config import dump_config

CONFIG_FILE = "config.yaml"
STORE_FILE = "store.sqlite"
RESULTS_FILE = "results.json"


def key(*parts: object) -> str:
    """A record's key: its parts joined by '/' (`e1/base/p12/0`), so a phase's records share a prefix."""
    return "/".join(map(str, parts))


@contextmanager
def atomic_directory(directory: str | Path) -> Iterator[Path]:
    """Yields a scratch path to fill; renamed to `directory` only when the block ends without error,
    so a directory under its final name is always whole (a checkpoint killed mid-write is never used)."""
    directory = Path(directory)
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(directory, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    yield partial
    partial.rename(directory)


class RunConfigMismatch(RuntimeError):
    pass


class RunStore:
    """The run directory's config and record store. Use as a context manager (or call `close`)."""

    def __init__(self, directory: str | Path, config: BaseModel):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        config_path = self.dir / CONFIG_FILE
        resolved = config.model_dump(mode="json")
        if config_path.exists():
            previous = yaml.safe_load(config_path.read_text())
            try:
                # A field added to the config since the run began reads as its default, so a run
                # resumes across such an upgrade (a new field's default keeps the old behaviour).
                previous = type(config).model_validate(previous).model_dump(mode="json")
            except ValidationError:
                pass  # compared as saved: the message below names what differs
            if previous != resolved:
                changed = sorted(k for k in set(previous) | set(resolved) if previous.get(k) != resolved.get(k))
                raise RunConfigMismatch(
                    f"{self.dir} holds a run with a different config (differs in: {', '.join(changed)}); "
                    "use another --out directory to start a new run"
                )
        else:
            dump_config(config, config_path)
        self._db: sqlite3.Connection | None = None
        self.db  # noqa: B018 - create the store now, so a run directory always has one

    @property
    def db(self) -> sqlite3.Connection:
        """The SQLite connection, opened on first use and again after `close` (a finished run's records
        stay readable from its experiment object)."""
        if self._db is None:
            self._db = sqlite3.connect(self.dir / STORE_FILE)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS records (kind TEXT, key TEXT, value TEXT, PRIMARY KEY (kind, key))"
            )
            self._db.commit()
        return self._db

    def put_many(self, kind: str, items: Iterable[tuple[str, Any]]) -> None:
        with self.db:  # one transaction
            self.db.executemany(
                "INSERT OR REPLACE INTO records (kind, key, value) VALUES (?, ?, ?)",
                [(kind, key, json.dumps(value)) for key, value in items],
            )

    def put(self, kind: str, key: str, value: Any) -> None:
        self.put_many(kind, [(key, value)])

    def get(self, kind: str, key: str) -> Any | None:
        row = self.db.execute("SELECT value FROM records WHERE kind = ? AND key = ?", (kind, key)).fetchone()
        return None if row is None else json.loads(row[0])

    def all(self, kind: str) -> dict[str, Any]:
        rows = self.db.execute("SELECT key, value FROM records WHERE kind = ? ORDER BY key", (kind,))
        return {key: json.loads(value) for key, value in rows}

    def keys(self, kind: str) -> set[str]:
        return {k for (k,) in self.db.execute("SELECT key FROM records WHERE kind = ?", (kind,))}

    @contextmanager
    def timed(self, key: str) -> Iterator[None]:
        """Wall time of a phase filed under ("timing", key), added up over resumed runs."""
        began = time.perf_counter()
        try:
            yield
        finally:
            self.put("timing", key, (self.get("timing", key) or 0.0) + time.perf_counter() - began)

    def write_results(self, results: dict) -> dict:
        """`results.json`: what the run's `run()` returns, beside its config."""
        (self.dir / RESULTS_FILE).write_text(json.dumps(results, indent=2))
        return results

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
