"""Where model work runs: in this process (the default), in worker processes on this machine,
or on a pool of Ray actors.

Every piece of model work (a batch of self-edits to sample, probes to answer, plans to adapt
and score, a policy to fine-tune) is a module-level function `fn(lm, item, *args)`. An
executor maps such a function over items and yields (item, result) pairs as they finish;
the caller, the driver, alone writes the run store. So the same experiment code runs
in-process, in local processes or on a cluster, and a run resumes the same way on each.

In a pool (processes or Ray actors), each worker loads the model once and follows the
policy: every call carries the policy's round adapters (their file contents, so no shared
filesystem is needed), and a worker merges the ones it has not merged yet. A worker that
dies is replaced and its item runs again on the replacement; nothing is recorded until a
result reaches the driver, so no record is lost or duplicated.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import pickle
import tempfile
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from seal.config import ExecutorConfig, ModelConfig
from seal.engine.training import report_tokens, reporting
from seal.files import sha256
from seal.models import LoadedModel, load_from, load_tokenizer_view

AdapterFiles = tuple[str, dict[str, bytes]]  # (name, file name -> content) of one policy round's adapter


class ModelSource(Protocol):
    """What an experiment's model is: its config, the current policy's adapters, and the model itself."""

    cfg: ModelConfig

    def __call__(self) -> LoadedModel: ...

    def adapter_files(self) -> list[AdapterFiles]: ...


class Executor(Protocol):
    def tokenizer_view(self) -> LoadedModel: ...

    def start(self) -> None: ...

    def map(self, fn: Callable, items: list, *args: Any) -> Iterator[tuple[Any, Any]]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Executor: ...

    def __exit__(self, *exc) -> None: ...


class _Closing:
    """`with executor:` closes it (its workers stop) however the block ends."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LocalExecutor(_Closing):
    def __init__(self, source: ModelSource):
        self.source = source

    def tokenizer_view(self) -> LoadedModel:
        return self.source()

    def start(self) -> None:
        """Load the model now (else on first need)."""
        self.source()

    def map(self, fn: Callable, items: list, *args: Any) -> Iterator[tuple[Any, Any]]:
        for item in items:
            yield item, fn(self.source(), item, *args)

    def close(self) -> None:
        pass


class Worker:
    """One model, kept in step with the driver's policy (a Ray actor, or the state of a worker process)."""

    def __init__(self, cfg: ModelConfig, threads: int):
        import torch

        torch.set_num_threads(max(1, threads))
        self.cfg, self.lm, self.merged = cfg, None, []

    def follow(self, adapters: list[AdapterFiles]) -> LoadedModel:
        from seal.policy import apply_adapter

        digests = [_digest(files) for _, files in adapters]
        if self.lm is None or digests[: len(self.merged)] != self.merged:
            self.lm, self.merged = load_from(self.cfg), []
        for (_, files), digest in list(zip(adapters, digests))[len(self.merged) :]:
            with tempfile.TemporaryDirectory() as tmp:
                for file_name, content in files.items():
                    (Path(tmp) / file_name).write_bytes(content)
                apply_adapter(self.lm, Path(tmp))
            self.merged.append(digest)
        return self.lm

    def run(self, adapters: list[AdapterFiles], fn: Callable, item: Any, *args: Any) -> Any:
        return fn(self.follow(adapters), item, *args)


def _digest(files: dict[str, bytes]) -> str:
    return sha256(part for name in sorted(files) for part in (name.encode(), files[name]))


class WorkerLost(RuntimeError):
    """A worker died (killed, out of memory, its node gone) with an item in flight."""


class ExecutorFailed(RuntimeError):
    """The pool cannot go on: more workers died than `executor.max_replacements`, or one died
    while starting. What the run stored so far stays; the same command resumes it."""


class PoolExecutor(_Closing, ABC):
    """A pool of workers, each holding the model once, one item in flight per worker. A worker
    that dies is replaced and its item runs again first, on the replacement; nothing is yielded
    (so nothing recorded) before a result reaches the driver. Subclasses say how a worker
    starts, takes a call, reports and stops."""

    def __init__(self, cfg: ExecutorConfig, source: ModelSource):
        self.cfg, self.source = cfg, source
        self.workers: list = []
        self.replaced = 0
        self.pending: dict[Any, tuple[int, Any]] = {}  # call handle -> (worker index, item)

    def tokenizer_view(self) -> LoadedModel:
        """Prompts are formatted on the driver, which needs the tokenizer, never the weights."""
        return load_tokenizer_view(self.source.cfg)

    def start(self) -> None:
        """Start the workers now (else on the first `map`: a finished run starts none)."""
        if not self.workers:
            self.workers = [self._start() for _ in range(self.cfg.workers)]
            for worker in self.workers:  # after starting them all: they load the model side by side
                self._ready(worker)

    def map(self, fn: Callable, items: list, *args: Any) -> Iterator[tuple[Any, Any]]:
        self.start()
        adapters = self._share(self.source.adapter_files())
        queue = list(items)
        self.pending = {}

        def submit(index: int) -> None:
            if queue:
                item = queue.pop(0)
                self.pending[self._call(index, adapters, fn, item, args)] = (index, item)

        for index in range(len(self.workers)):
            submit(index)
        while self.pending:
            handle = self._first_done(list(self.pending))
            index, item = self.pending.pop(handle)
            try:
                result = self._result(handle)
            except WorkerLost:
                self._replace(index)
                queue.insert(0, item)
                submit(index)
                continue
            yield item, result
            submit(index)

    def _replace(self, index: int) -> None:
        self.replaced += 1
        if self.replaced > self.cfg.max_replacements:
            raise ExecutorFailed(f"{self.replaced} workers died in this run; giving up (executor.max_replacements)")
        self._stop(self.workers[index])
        self.workers[index] = self._start()
        self._ready(self.workers[index])

    def close(self) -> None:
        for worker in self.workers:
            self._stop(worker)
        self.workers = []

    @abstractmethod
    def _start(self) -> Any: ...

    def _ready(self, worker: Any) -> None:
        """Wait until a started worker can take calls."""

    def _share(self, adapters: list[AdapterFiles]) -> Any:
        return adapters

    @abstractmethod
    def _call(self, index: int, adapters: Any, fn: Callable, item: Any, args: tuple) -> Any: ...

    @abstractmethod
    def _first_done(self, handles: list) -> Any: ...

    @abstractmethod
    def _result(self, handle: Any) -> Any: ...

    @abstractmethod
    def _stop(self, worker: Any) -> None: ...


class RayExecutor(PoolExecutor):
    """Ray actors, on this machine or a cluster."""

    def __init__(self, cfg: ExecutorConfig, source: ModelSource):
        import ray

        super().__init__(cfg, source)
        self.ray = ray
        if not ray.is_initialized():
            ray.init(address=cfg.address, ignore_reinit_error=True, log_to_driver=False, include_dashboard=False)
        self.remote_worker = ray.remote(Worker).options(num_cpus=cfg.cpus_per_worker, num_gpus=cfg.gpus_per_worker)

    def _start(self):
        return self.remote_worker.remote(self.source.cfg, int(self.cfg.cpus_per_worker))

    def _share(self, adapters):
        return self.ray.put(adapters)  # once per map, not once per call

    def _call(self, index, adapters, fn, item, args):
        return self.workers[index].run.remote(adapters, fn, item, *args)

    def _first_done(self, handles):
        (ref,), _ = self.ray.wait(handles, num_returns=1)
        return ref

    def _result(self, ref):
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayActorError as err:
            raise WorkerLost(str(err)) from err

    def _stop(self, actor) -> None:
        self.ray.kill(actor, no_restart=True)


@dataclass
class _Process:
    process: Any  # multiprocessing.Process
    conn: Any  # the driver's end of its pipe


def _serve(conn, cfg: ModelConfig, threads: int) -> None:
    """A worker process: load the model, then run the calls that arrive until the pipe closes."""
    try:
        worker = Worker(cfg, threads)
        worker.follow([])
    except Exception as err:  # an unknown model, say: the driver raises it
        conn.send(("error", _portable(err)))
        return
    conn.send(("ready", None))
    while True:
        try:
            adapters, fn, item, args = conn.recv()
        except EOFError:
            return
        try:
            # The tokens of every training step go to the driver as they are trained, so its progress moves
            # before the whole unit of work comes back.
            with reporting(lambda n: conn.send(("tokens", n))):
                result = worker.run(adapters, fn, item, *args)
            conn.send(("ok", result))
        except Exception as err:
            conn.send(("error", _portable(err)))


def _portable(err: Exception) -> Exception:
    """The exception itself if it survives pickling, else a RuntimeError with its traceback."""
    text = "".join(traceback.format_exception(err))
    try:
        pickle.loads(pickle.dumps(err))
    except Exception:
        return RuntimeError(f"in a worker process:\n{text}")
    err.add_note(f"in a worker process:\n{text}")
    return err


class ProcessExecutor(PoolExecutor):
    """Worker processes on this machine, `cpus_per_worker` threads each. On a CPU, where the many
    small operators of a training step leave a second thread of one process half idle, two
    one-thread workers evaluate self-edits 1.4-1.5x as fast as one two-thread process
    (bench/inner_loop.py on 2 cores)."""

    def __init__(self, cfg: ExecutorConfig, source: ModelSource):
        super().__init__(cfg, source)
        self.arrived: dict[int, tuple[str, Any]] = {}  # worker index -> the message that ended its call

    def _start(self) -> _Process:
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch thread pools
        conn, child = context.Pipe()
        process = context.Process(
            target=_serve, args=(child, self.source.cfg, int(self.cfg.cpus_per_worker)), daemon=True
        )
        process.start()
        child.close()  # so the driver's end reads EOF when the worker dies
        return _Process(process, conn)

    def _ready(self, worker: _Process) -> None:
        try:
            status, payload = worker.conn.recv()  # sent once the model is loaded
        except EOFError as err:
            worker.process.join()
            raise ExecutorFailed(f"a worker process died while starting (exit code {worker.process.exitcode})") from err
        if status == "error":
            raise payload

    def _call(self, index, adapters, fn, item, args):
        try:
            self.workers[index].conn.send((adapters, fn, item, args))
        except OSError:
            pass  # the worker is gone: its pipe reads EOF and _result reports it lost
        return index

    def _first_done(self, handles):
        """The first worker whose call ends (its result, its error, or its death); the tokens workers train
        meanwhile are reported in the driver (`seal.engine.training.reporting`)."""
        while True:
            ready = multiprocessing.connection.wait([self.workers[index].conn for index in handles])
            for index in handles:
                if self.workers[index].conn not in ready:
                    continue
                message = self._receive(index)
                if message[0] != "tokens":
                    self.arrived[index] = message
                    return index
                report_tokens(message[1])

    def _receive(self, index: int) -> tuple[str, Any]:
        try:
            return self.workers[index].conn.recv()
        except (EOFError, OSError):
            return "lost", f"worker process {index} died (exit code {self.workers[index].process.exitcode})"

    def _result(self, index):
        status, payload = self.arrived.pop(index)
        if status == "lost":
            raise WorkerLost(payload)
        if status == "error":
            raise payload
        return payload

    def _stop(self, worker: _Process) -> None:
        worker.conn.close()
        worker.process.join(timeout=10)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join()


def make_executor(cfg: ExecutorConfig, source: ModelSource) -> Executor:
    if cfg.kind == "ray":
        return RayExecutor(cfg, source)
    if cfg.kind == "processes":
        return ProcessExecutor(cfg, source)
    return LocalExecutor(source)
