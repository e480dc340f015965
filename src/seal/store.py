"""A run is a directory: its resolved config, an SQLite store of every record, and its outputs.

Records are JSON objects filed under (kind, key). Each batch of records is written in one
transaction, so a run killed at any moment holds only whole batches; re-running the same
command reads what is there and does only the rest.

One command at a time writes a run directory: a writer holds an OS lock on `run.lock` (see
`RunLock`), which the kernel drops when the process ends, however it ends. Directories the run
reads back later (adapters) are recorded with each file's size and sha256 once whole, so a
resumed run tells a damaged one from a good one (`RunStore.damage`). A damaged store or config,
another writer, or a disk that is full is one `RunError` whose message says what to do.

Every write of records is numbered (its `step`, a counter the store keeps, so a resumed run goes on
counting) and timed (`written_at`); observers (`RunStore.observe`) are told of each write once it is
committed, which is how a run is watched from other tools (`seal.tracking`) without a second record.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shlex
import shutil
import socket
import sqlite3
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Protocol

from pydantic import BaseModel, ValidationError

from seal import files
from seal.config import dump_config, parse_yaml

CONFIG_FILE = "config.yaml"
STORE_FILE = "store.sqlite"
RESULTS_FILE = "results.json"
LOCK_FILE = "run.lock"
# Config fields that say how a run is watched or where its work runs, not what it computes: a resumed
# run may change them (a run begun on two worker processes may finish on one, or on a Ray cluster).
NOT_COMPUTED = {"tracking", "executor"}
WRITES = "writes"  # the counter that numbers the store's writes of records
# Seconds since the epoch, as SQLite computes it while it writes a row (so a row's time is its commit's).
NOW_SQL = "((julianday('now') - 2440587.5) * 86400.0)"


def key(*parts: object) -> str:
    """A record's key: its parts joined by '/' (`e1/base/p12/0`), so a phase's records share a prefix."""
    return "/".join(map(str, parts))


@contextmanager
def atomic_directory(directory: str | Path) -> Iterator[Path]:
    """Yields a scratch path to fill; renamed to `directory` only when the block ends without error,
    so a directory under its final name is always whole (a checkpoint killed mid-write is never used).
    The scratch path is removed when the block fails, so a full disk gets its space back."""
    directory = Path(directory)
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(directory, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    partial.rename(directory)


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yields a scratch path to write; it replaces `path` only when the block ends without error."""
    partial = path.with_name(path.name + ".partial")
    try:
        yield partial
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(path)


class RunError(RuntimeError):
    """A run directory that cannot be used as it is; the message says why and what to do."""


class RunConfigMismatch(RunError):
    pass


class RunLocked(RunError):
    """Another command holds the run directory."""


class RunDamaged(RunError):
    """A file of the run (its store, its config, a checked directory) cannot be read as written."""


class RunOutOfSpace(RunError):
    """A write failed for lack of space; the store is at its last whole transaction."""


def out_of_space(err: BaseException, directory: Path) -> RunOutOfSpace | None:
    """The one clear error for a write that failed for lack of space, or None when `err` is another failure."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        what = err.filename or directory
    elif isinstance(err, sqlite3.OperationalError) and "database or disk is full" in str(err):
        what = directory / STORE_FILE
    else:
        return None
    return RunOutOfSpace(
        f"no space left on the device writing {what}; the run keeps everything it finished before this write: "
        "free some space and re-run the same command to resume"
    )


@contextmanager
def reporting_out_of_space(directory: Path) -> Iterator[None]:
    """A write in the block that fails for lack of space leaves it as one `RunOutOfSpace`."""
    try:
        yield
    except (OSError, sqlite3.OperationalError) as err:
        full = out_of_space(err, directory)
        if full is None:
            raise
        raise full from err


class RunLock:
    """An exclusive `flock` on RUN/run.lock, which names its holder (pid, host, command line) for the
    message a second command gets. The kernel drops the lock when the holder's process ends, killed
    or not, so a stale lock file never blocks a run; only its contents outlive the process."""

    def __init__(self, directory: Path):
        self.path = directory / LOCK_FILE
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        """Hold the lock (again a no-op while held); `RunLocked` at once when another process holds it."""
        if self._file is not None:
            return
        file = open(self.path, "a+")  # not truncated: until the lock is ours, the holder's line is read
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip() or "another process"
            file.close()
            raise RunLocked(
                f"{self.path.parent} is in use by {holder}; one command at a time writes a run directory: "
                "wait for that one to end (or stop it), or use another --out directory"
            ) from None
        try:
            file.truncate(0)
            file.write(f"pid {os.getpid()} on {socket.gethostname()} ({shlex.join(sys.orig_argv)})\n")
            file.flush()
        except BaseException:
            file.close()
            raise
        self._file = file

    def release(self) -> None:
        if self._file is not None:
            self._file.truncate(0)  # the holder's line goes with the lock
            self._file.close()
            self._file = None


class Observer(Protocol):
    """Told of what a run store writes, after it is committed (see `RunStore.observe`)."""

    def written(self, store: RunStore, kind: str, items: list[tuple[str, Any]], step: int) -> None:
        """Records `items` of `kind` were written whole as the store's write number `step`."""

    def closed(self, store: RunStore) -> None:
        """The store was closed: what the observer holds open should be flushed and closed too."""


class RunStore:
    """The run directory's config and record store. Use as a context manager (or call `close`).

    A writer holds the run's lock from `__init__` to `close` (taken again by `__enter__` or a write
    after `close`, until the next `close`); reading a closed store reopens it without the lock, so a
    finished run's records stay readable from its experiment object. `read_only=True` takes no lock
    and never writes (`config` may then be None: the run is read as it is)."""

    def __init__(self, directory: str | Path, config: BaseModel | None, read_only: bool = False):
        self.dir = Path(directory)
        self.read_only = read_only
        self.lock = RunLock(self.dir)
        self._db: sqlite3.Connection | None = None
        self.observers: list[Observer] = []
        if read_only and not (self.dir / STORE_FILE).exists():
            raise FileNotFoundError(f"{self.dir} holds no run (no {STORE_FILE})")
        if config is None and not read_only:
            raise ValueError("a run's writer needs its config")
        try:
            with reporting_out_of_space(self.dir):
                if not read_only:
                    self.dir.mkdir(parents=True, exist_ok=True)
                    self.lock.acquire()
                if config is not None:
                    self._check_config(config)
                self.db  # noqa: B018 - open (or create) the store now, so a run directory always has one
        except BaseException:
            self.close()  # the lock goes with a store that cannot be used
            raise

    def _check_config(self, config: BaseModel) -> None:
        config_path = self.dir / CONFIG_FILE
        resolved = config.model_dump(mode="json")
        if not config_path.exists():
            if not self.read_only:
                with atomic_file(config_path) as partial:
                    dump_config(config, partial)
            return
        try:
            previous = parse_yaml(config_path.read_text(), str(config_path))
            if not isinstance(previous, dict):
                raise ValueError(f"{config_path}: expected a mapping of config fields")
        except ValueError as err:
            raise RunDamaged(f"{err}; repair it (it holds the run's config) or use another --out directory") from None
        try:
            # A field added to the config since the run began reads as its default, so a run
            # resumes across such an upgrade (a new field's default keeps the old behaviour).
            previous = type(config).model_validate(previous).model_dump(mode="json")
        except ValidationError:
            pass  # compared as saved: the message below names what differs
        changed = sorted(k for k in set(previous) | set(resolved) if previous.get(k) != resolved.get(k))
        if set(changed) - NOT_COMPUTED:
            raise RunConfigMismatch(
                f"{self.dir} holds a run with a different config (differs in: {', '.join(changed)}); "
                "use another --out directory to start a new run"
            )
        if changed and not self.read_only:  # how it is watched or run changed: the saved config says how it is now
            with atomic_file(config_path) as partial:
                dump_config(config, partial)

    @property
    def db(self) -> sqlite3.Connection:
        """The SQLite connection, opened on first use and again after `close` (a finished run's records
        stay readable from its experiment object); `RunDamaged` when SQLite cannot read the store whole."""
        if self._db is None:
            self._db = self._open()
        return self._db

    def _open(self) -> sqlite3.Connection:
        path = self.dir / STORE_FILE
        if self.read_only:
            db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        else:
            db = sqlite3.connect(path)
        try:
            # Every page read once (quick_check): a store cut short or overwritten is found here, not mid-run.
            problems = [row for (row,) in db.execute("PRAGMA quick_check")]
            if not self.read_only:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute(
                    "CREATE TABLE IF NOT EXISTS records (kind TEXT, key TEXT, value TEXT, PRIMARY KEY (kind, key))"
                )
                # Apart from the records: a file's bytes may differ between equal runs (peft writes a set
                # in hash order), the records may not.
                db.execute("CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, files TEXT)")
                db.execute("CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER)")
                db.execute("INSERT OR IGNORE INTO counters (name, value) VALUES (?, 0)", (WRITES,))
                # Stores written before records were numbered and timed get the columns (NULL in their rows).
                columns = {row[1] for row in db.execute("PRAGMA table_info(records)")}
                for column, sql_type in (("written_at", "REAL"), ("step", "INTEGER")):
                    if column not in columns:
                        db.execute(f"ALTER TABLE records ADD COLUMN {column} {sql_type}")
                db.commit()
        except sqlite3.DatabaseError as err:
            db.close()
            if out_of_space(err, self.dir):
                raise
            problems = [str(err)]
        if problems != ["ok"]:
            db.close()
            raise RunDamaged(
                f"{path} is damaged ({' '.join(problems[0].split())}); the run's records cannot be read: restore the "
                f"file from a backup (or salvage it with `sqlite3 {path} .recover`), or start again in another --out "
                "directory"
            )
        return db

    def _for_writing(self) -> None:
        if self.read_only:
            raise RuntimeError(f"{self.dir} was opened read-only")  # a bug, not user input
        self.lock.acquire()

    def _write(self, sql: str, rows: list[tuple], numbered: bool = False) -> None:
        self._for_writing()
        with reporting_out_of_space(self.dir), self.db:  # one transaction
            if numbered:
                self.db.execute("UPDATE counters SET value = value + 1 WHERE name = ?", (WRITES,))
            self.db.executemany(sql, rows)

    def put_many(self, kind: str, items: Iterable[tuple[str, Any]]) -> None:
        """Record the items in one transaction: all of them, or (on any failure) none. The write is
        numbered (`step`) and timed (`written_at`) in the same transaction; observers are told after it."""
        items = list(items)
        rows = [(kind, key, json.dumps(value)) for key, value in items]
        self._write(
            "INSERT OR REPLACE INTO records (kind, key, value, written_at, step) VALUES "
            f"(?, ?, ?, {NOW_SQL}, (SELECT value FROM counters WHERE name = '{WRITES}'))",
            rows,
            numbered=True,
        )
        if self.observers:
            step = self.step()
            for observer in self.observers:
                observer.written(self, kind, items, step)

    def put(self, kind: str, key: str, value: Any) -> None:
        self.put_many(kind, [(key, value)])

    def step(self) -> int:
        """The number of the last write of records (0 before the first; kept across resumed runs)."""
        try:
            row = self.db.execute("SELECT value FROM counters WHERE name = ?", (WRITES,)).fetchone()
        except sqlite3.OperationalError:  # a store written before writes were numbered, read as it is
            return 0
        return 0 if row is None else row[0]

    def write_times(self, kind: str, keys: Iterable[str] | None = None) -> dict[str, tuple[float, int]]:
        """When each record of `kind` (of `keys` only, when given) was last written, in seconds since the epoch,
        and the step of that write; empty for a store written before records were timed."""
        if not self.timed_records():
            return {}
        rows = self.db.execute(
            "SELECT key, written_at, step FROM records WHERE kind = ? AND written_at IS NOT NULL", (kind,)
        )
        wanted = None if keys is None else set(keys)
        return {k: (t, s) for k, t, s in rows if wanted is None or k in wanted}

    def timed_records(self) -> bool:
        """Whether records carry their time and step (a store from before they did, opened read-only, does not)."""
        return "step" in {row[1] for row in self.db.execute("PRAGMA table_info(records)")}

    def writes_after(self, step: int) -> Iterator[tuple[int, str, list[tuple[str, Any]]]]:
        """The records written after write `step` as they stand now, write by write: (step, kind, items)."""
        if not self.timed_records():
            return
        rows = self.db.execute("SELECT step, kind, key, value FROM records WHERE step > ? ORDER BY step, key", (step,))
        current: tuple[int, str] | None = None
        items: list[tuple[str, Any]] = []
        for row_step, kind, row_key, value in rows:
            if current is not None and current != (row_step, kind):
                yield (*current, items)
                items = []
            current = (row_step, kind)
            items.append((row_key, json.loads(value)))
        if current is not None:
            yield (*current, items)

    def observe(self, observer: Observer) -> None:
        """Tell `observer` of every later write of records (`Observer.written`) and of `close`."""
        self.observers.append(observer)

    def delete(self, kind: str, key: str) -> None:
        """Forget a record (something to do again)."""
        self._write("DELETE FROM records WHERE kind = ? AND key = ?", [(kind, key)])

    def get(self, kind: str, key: str) -> Any | None:
        row = self.db.execute("SELECT value FROM records WHERE kind = ? AND key = ?", (kind, key)).fetchone()
        return None if row is None else json.loads(row[0])

    def all(self, kind: str) -> dict[str, Any]:
        rows = self.db.execute("SELECT key, value FROM records WHERE kind = ? ORDER BY key", (kind,))
        return {key: json.loads(value) for key, value in rows}

    def keys(self, kind: str) -> set[str]:
        return {k for (k,) in self.db.execute("SELECT key FROM records WHERE kind = ?", (kind,))}

    @contextmanager
    def checked_directory(self, relative: str) -> Iterator[Path]:
        """`atomic_directory` for RUN/relative, then `record_files(relative)`: a directory the run reads back."""
        self._for_writing()
        with atomic_directory(self.dir / relative) as partial:
            yield partial
        self.record_files(relative)

    def record_files(self, relative: str) -> None:
        """Record the size and sha256 of each file under RUN/relative (`recorded_files`), so a later run can
        check the directory (`damage`) before it reads it back."""
        sums = files.written(self.dir / relative)
        self._write("INSERT OR REPLACE INTO files (path, files) VALUES (?, ?)", [(relative, json.dumps(sums))])

    def recorded_files(self, relative: str) -> dict[str, dict] | None:
        """Each file of RUN/relative as `checked_directory` wrote it: name -> {size, sha256}; None if not recorded."""
        row = self.db.execute("SELECT files FROM files WHERE path = ?", (relative,)).fetchone()
        return None if row is None else json.loads(row[0])

    def damage(self, relative: str) -> str | None:
        """What is wrong with RUN/relative against its recorded files (one missing, cut short or changed),
        or None when it is as written; also None when nothing was recorded for it (a run from before
        files were recorded)."""
        return files.damage(self.dir / relative, self.recorded_files(relative) or {})

    @contextmanager
    def timed(self, key: str) -> Iterator[None]:
        """Wall time of a phase filed under ("timing", key), added up over resumed runs."""
        began = time.perf_counter()
        try:
            yield
        finally:
            self.put("timing", key, (self.get("timing", key) or 0.0) + time.perf_counter() - began)

    def write_results(self, results: dict) -> dict:
        """`results.json`: what the run's `run()` returns, beside its config (written whole or not at all)."""
        self._for_writing()
        with atomic_file(self.dir / RESULTS_FILE) as partial:
            partial.write_text(json.dumps(results, indent=2))
        return results

    def close(self) -> None:
        """Close the store (its observers first) and release the run's lock."""
        try:
            for observer in self.observers:
                observer.closed(self)
        finally:
            if self._db is not None:
                self._db.close()
                self._db = None
            self.lock.release()

    def __enter__(self) -> RunStore:
        if not self.read_only:
            self.lock.acquire()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """Close; a write in the block that failed for lack of space leaves as one `RunOutOfSpace`."""
        self.close()
        full = None if exc is None else out_of_space(exc, self.dir)
        if full is not None:
            raise full from exc
