"""Where model work runs: in this process (the default), or on a pool of Ray actors.

Every piece of model work (a batch of self-edits to sample, probes to answer, plans to adapt
and score, a policy to fine-tune) is a module-level function `fn(lm, item, *args)`. An
executor maps such a function over items and yields (item, result) pairs as they finish;
the caller, the driver, alone writes the run store. So the same experiment code runs
in-process or on a cluster, and a run resumes the same way on either.

With Ray, each actor loads the model once and follows the policy: every call carries the
policy's round adapters (their file contents, so no shared filesystem is needed), and an
actor merges the ones it has not merged yet. An actor that dies is replaced and its item
runs again on the replacement; nothing is recorded until a result reaches the driver, so
no record is lost or duplicated.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from seal.config import ExecutorConfig, ModelConfig
from seal.models import LoadedModel, load_model, load_tokenizer_view

AdapterFiles = tuple[str, dict[str, bytes]]  # (name, file name -> content) of one policy round's adapter


class ModelSource(Protocol):
    """What an experiment's model is: its config, the current policy's adapters, and the model itself."""

    cfg: ModelConfig

    def __call__(self) -> LoadedModel: ...

    def adapter_files(self) -> list[AdapterFiles]: ...


class Executor(Protocol):
    def tokenizer_view(self) -> LoadedModel: ...

    def map(self, fn: Callable, items: list, *args: Any) -> Iterator[tuple[Any, Any]]: ...

    def close(self) -> None: ...


class LocalExecutor:
    def __init__(self, source: ModelSource):
        self.source = source

    def tokenizer_view(self) -> LoadedModel:
        return self.source()

    def map(self, fn: Callable, items: list, *args: Any) -> Iterator[tuple[Any, Any]]:
        for item in items:
            yield item, fn(self.source(), item, *args)

    def close(self) -> None:
        pass


class Worker:
    """A Ray actor: one model, kept in step with the driver's policy."""

    def __init__(self, cfg: ModelConfig, threads: int):
        import torch

        torch.set_num_threads(max(1, threads))
        self.cfg, self.lm, self.merged = cfg, None, []

    def _follow(self, adapters: list[AdapterFiles]) -> LoadedModel:
        from seal.policy import apply_adapter

        digests = [_digest(files) for _, files in adapters]
        if self.lm is None or digests[: len(self.merged)] != self.merged:
            self.lm, self.merged = load_model(self.cfg.name, self.cfg.dtype, chat_template=self.cfg.chat_template), []
        for (name, files), digest in list(zip(adapters, digests))[len(self.merged) :]:
            with tempfile.TemporaryDirectory() as tmp:
                for file_name, content in files.items():
                    (Path(tmp) / file_name).write_bytes(content)
                apply_adapter(self.lm, Path(tmp))
            self.merged.append(digest)
        return self.lm

    def run(self, adapters: list[AdapterFiles], fn: Callable, item: Any, *args: Any) -> Any:
        return fn(self._follow(adapters), item, *args)

    def ready(self) -> bool:
        return True


def _digest(files: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode())
        h.update(files[name])
    return h.hexdigest()


class RayExecutor:
    def __init__(self, cfg: ExecutorConfig, source: ModelSource):
        import ray

        self.cfg, self.source, self.ray = cfg, source, ray
        if not ray.is_initialized():
            ray.init(address=cfg.address, ignore_reinit_error=True, log_to_driver=False, include_dashboard=False)
        self.remote_worker = ray.remote(Worker).options(num_cpus=cfg.cpus_per_worker, num_gpus=cfg.gpus_per_worker)
        self.actors = [self._start() for _ in range(cfg.workers)]
        self.replaced = 0
        self.pending: dict[Any, tuple[int, Any]] = {}  # object ref -> (actor index, item)

    def _start(self):
        return self.remote_worker.remote(self.source.cfg, int(self.cfg.cpus_per_worker))

    def tokenizer_view(self) -> LoadedModel:
        """Prompts are formatted on the driver, which needs the tokenizer, never the weights."""
        return load_tokenizer_view(self.source.cfg)

    def map(self, fn: Callable, items: list, *args: Any) -> Iterator[tuple[Any, Any]]:
        adapters = self.ray.put(self.source.adapter_files())
        queue = list(items)
        self.pending = {}

        def submit(index: int) -> None:
            if queue:
                item = queue.pop(0)
                self.pending[self.actors[index].run.remote(adapters, fn, item, *args)] = (index, item)

        for index in range(len(self.actors)):
            submit(index)
        while self.pending:
            (ref,), _ = self.ray.wait(list(self.pending), num_returns=1)
            index, item = self.pending.pop(ref)
            try:
                result = self.ray.get(ref)
            except self.ray.exceptions.RayActorError:
                self._replace(index)
                queue.insert(0, item)  # runs again, first, on the replacement
                submit(index)
                continue
            yield item, result
            submit(index)

    def _replace(self, index: int) -> None:
        self.replaced += 1
        if self.replaced > self.cfg.max_replacements:
            raise RuntimeError(f"{self.replaced} Ray actors died in this run; giving up (executor.max_replacements)")
        self.ray.kill(self.actors[index], no_restart=True)
        self.actors[index] = self._start()

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor, no_restart=True)
        self.actors = []


def make_executor(cfg: ExecutorConfig, source: ModelSource) -> LocalExecutor | RayExecutor:
    if cfg.kind == "ray":
        return RayExecutor(cfg, source)
    return LocalExecutor(source)
