"""Steps every experiment shares, whatever its domain: seeds, means, progress, self-edit sampling.

Each step is resumable from the run store: it files its records under keys and a re-run does
only the keys that are missing. Model work goes through an executor (`seal.cluster`) as a
module-level function `fn(lm, item, *args)`, so it runs the same in-process or on workers.
"""

from __future__ import annotations

import statistics
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from seal.cluster import Executor
from seal.config import AdaptConfig, ModelConfig, SamplingConfig, Section
from seal.engine.planner import planned_slots
from seal.engine.sampling import generate
from seal.engine.structured import regex_constraint
from seal.engine.training import reporting, tokenize_documents
from seal.models import LoadedModel, model_parameters
from seal.status import begin_phase, record_training
from seal.store import RunStore, key
from seal.tracking import Tracker, check_sinks


class Experiment:
    """One command's experiment: built from its config and a run directory (created, or resumed when it
    holds a run of the same config; `console` is where progress is drawn), `run()` does what the store
    does not hold yet and returns what it writes to results.json."""

    def run(self) -> dict:
        raise NotImplementedError


def open_run(out: str | Path, cfg: Section) -> RunStore:
    """An experiment's run store in `out` (created, or resumed), its writes logged to the config's
    `tracking` sinks as they happen; a sink whose package is missing is refused before the run starts."""
    check_sinks(cfg.tracking)
    store = RunStore(out, cfg)
    if cfg.tracking:
        Tracker(store, cfg.tracking, cfg.model_dump(mode="json"))
    return store


def stable_seed(*parts: object) -> int:
    """A seed fixed by its parts (a run's seed, a phase, a key): the same wherever and whenever it is drawn."""
    return zlib.crc32("/".join(map(str, parts)).encode()) & 0x7FFFFFFF


def mean(xs: list[float]) -> float:
    return statistics.fmean(xs) if xs else float("nan")


def progress_bar(console: Console) -> Progress:
    """A progress bar with the items done, the time spent and an estimate of the time left."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
    )


# Measured here (bench/inner_loop.py, 2 cores): the embedded 135M model trains about 500 packed tokens per
# second in the batched engine; a larger model's rate scales down with its parameters.
CPU_TOKENS_PER_SECOND_135M = 500.0
LONG_ON_CPU_S = 15 * 60


def estimated_seconds(model_cfg: ModelConfig, tokens: int) -> float | None:
    """A rough time to train `tokens` packed tokens on this CPU (None on a GPU, or when the model's size
    cannot be read without loading it)."""
    if torch.cuda.is_available():
        return None
    params = model_parameters(model_cfg)
    return None if params is None else tokens / (CPU_TOKENS_PER_SECOND_135M * 135e6 / params)


def resolve_slots(executor: Executor, adapt: AdaptConfig) -> AdaptConfig:
    """`adapt` with `slots: auto` planned where the model is (one unit of work on the executor, planned once per
    process holding the model), so that plans are cut into units of the size the banks will have."""
    if adapt.slots != "auto" or adapt.engine == "peft":
        return adapt
    ((_, slots),) = list(executor.map(planned_slots, [None], adapt))
    return adapt.model_copy(update={"slots": slots})


def training_tokens(lm: LoadedModel, documents: list, epochs: int, adapt: AdaptConfig) -> int:
    """The packed tokens an adapter trains on `documents` for `epochs` (what `TrainStats.tokens` counts)."""
    return epochs * sum(len(ids) for ids, _ in tokenize_documents(lm, documents, adapt))


def warn_if_long(console: Console, what: str, tokens: int, model_cfg: ModelConfig, hint: str) -> None:
    """On a CPU, one line before a phase estimated at over 15 minutes: its estimate and a hint."""
    seconds = estimated_seconds(model_cfg, tokens)
    if seconds is not None and seconds > LONG_ON_CPU_S:
        console.print(
            f"[yellow]note:[/] {what} trains about {tokens:,} tokens: roughly {seconds / 60:.0f} minutes on this CPU. "
            + hint
        )


class TrainingProgress:
    """A progress bar over units of work measured in the tokens they train, so its estimate of the time left
    holds while a unit trains: it moves at every packed step, in this process or in a worker process
    (`seal.engine.training.reporting`); with a run's `store`, the tokens trained so far are recorded for
    `seal status` every few seconds. On a CPU, a phase estimated at over 15 minutes says so before it starts,
    with a hint."""

    RECORD_EVERY_S = 5.0

    def __init__(
        self,
        console: Console,
        label: str,
        unit_tokens: list[int],
        model_cfg: ModelConfig,
        hint: str,
        store: RunStore | None = None,
    ):
        self.console, self.store, self.label, self.unit_tokens = console, store, label, unit_tokens
        self.total = sum(unit_tokens)
        self.reported = 0  # tokens reported by the training steps so far, units in flight included
        self.done = 0  # tokens of the units that came back
        self.recorded_at = 0.0
        warn_if_long(console, label, self.total, model_cfg, hint)

    def __enter__(self) -> TrainingProgress:
        self.bar = progress_bar(self.console).__enter__()
        self.task = self.bar.add_task(self.label, total=self.total)
        self._reporting = reporting(self._tokens)
        self._reporting.__enter__()
        return self

    def _trained(self) -> int:
        # Units that came back count whole; beyond them, what the steps reported (several units train at once
        # on worker processes, so the reports run ahead of the units done).
        return min(self.total, max(self.done, self.reported))

    def _show(self, record: bool) -> None:
        self.bar.update(self.task, completed=self._trained())
        if self.store is not None and (record or time.monotonic() - self.recorded_at >= self.RECORD_EVERY_S):
            record_training(self.store, self.label, self._trained(), self.total)
            self.recorded_at = time.monotonic()

    def _tokens(self, n: int) -> None:
        self.reported += n
        self._show(record=False)

    def unit_done(self, unit: int) -> None:
        self.done += self.unit_tokens[unit]
        self._show(record=True)

    def __exit__(self, *exc) -> None:
        self._reporting.__exit__(*exc)
        self.bar.__exit__(*exc)


def sample_self_edits(
    store: RunStore,
    executor: Executor,
    prefix: str,
    wanted: list[tuple[str, str]],
    sampling: SamplingConfig,
    seed: int,
    console: Console,
    grammar: str | None = None,
) -> None:
    """A completion of each (key, prompt) filed as self-edit `{prefix}/{key}` with its prompt.

    Batch b is seeded by (seed, prefix, b) and written in one transaction, so a resumed run samples
    exactly what the interrupted one would have.

    Args:
        store: the run store (self-edits are filed under the kind "self_edits").
        executor: where the policy runs.
        prefix: the phase the self-edits belong to (a condition, `r1/train/implications`, ...).
        wanted: (key within the phase, unformatted prompt) pairs.
        sampling: temperature, top_p, new tokens, prompts per batch.
        seed: the run's seed.
        console: where the progress bar is drawn.
        grammar: a regex every self-edit must match (constrained sampling), or None.
    """
    batches = _in_batches(wanted, sampling.batch_size)
    done = store.keys("self_edits")
    todo = [(b, batch) for b, batch in enumerate(batches) if any(key(prefix, k) not in done for k, _ in batch)]
    if not todo:
        return
    label = f"{prefix}: writing self-edits"
    begin_phase(store, label, "sample", "self_edits", [key(prefix, k) for k, _ in wanted])
    _sample_into_store(store, executor, todo, label, prefix, prefix, sampling, seed, console, grammar, {})


def resample_self_edits(
    store: RunStore,
    executor: Executor,
    prefix: str,
    wanted: list[tuple[str, str]],
    sampling: SamplingConfig,
    seed: int,
    console: Console,
    acceptable: Callable[[str, dict[str, dict]], bool],
    attempts: int,
    grammar: str | None = None,
) -> None:
    """Sample again, up to `attempts` times, the self-edits of `wanted` (already sampled) that
    `acceptable(key, self_edits)` refuses (one that does not parse, one that repeats an earlier one).

    The keys an attempt redoes are recorded before it samples, and its batches are seeded by the attempt,
    so a resumed run redoes exactly what the interrupted one would have. A self-edit still refused after
    the last attempt stays as it is (and is recorded as invalid where it is used)."""
    prompts = dict(wanted)
    for attempt in range(1, attempts + 1):
        planned_key = key(prefix, f"attempt-{attempt}")
        planned = store.get("resamples", planned_key)
        if planned is None:
            sampled = store.all("self_edits")
            planned = [k for k, _ in wanted if not acceptable(k, sampled)]
            store.put("resamples", planned_key, planned)
        if not planned:
            return
        redo = [(k, prompts[k]) for k in planned]
        batches = _in_batches(redo, sampling.batch_size)
        sampled = store.all("self_edits")
        todo = [
            (b, batch)
            for b, batch in enumerate(batches)
            if any(sampled[key(prefix, k)].get("attempt", 0) < attempt for k, _ in batch)
        ]
        label = f"{prefix}: sampling {len(redo)} self-edits again (attempt {attempt})"
        seed_prefix = f"{prefix}#{attempt}"
        _sample_into_store(
            store, executor, todo, label, prefix, seed_prefix, sampling, seed, console, grammar, {"attempt": attempt}
        )


def _in_batches(items: list, size: int) -> list[list]:
    return [items[s : s + size] for s in range(0, len(items), size)]


def _sample_into_store(
    store: RunStore,
    executor: Executor,
    todo: list[tuple[int, list[tuple[str, str]]]],
    label: str,
    prefix: str,
    seed_prefix: str,
    sampling: SamplingConfig,
    seed: int,
    console: Console,
    grammar: str | None,
    extra: dict,
) -> None:
    """Sample the (batch index, batch) items of `todo` (each batch seeded by seed, seed_prefix and its index)
    and file each batch's self-edits under `prefix` in one transaction, with `extra` fields."""
    with progress_bar(console) as progress:
        task = progress.add_task(label, total=sum(len(b) for _, b in todo))
        for (_, batch), texts in executor.map(sample_work, todo, sampling, seed, seed_prefix, grammar):
            records = [(key(prefix, k), {"prompt": x, "text": t, **extra}) for (k, x), t in zip(batch, texts)]
            store.put_many("self_edits", records)
            progress.advance(task, len(batch))


def sample_work(
    lm: LoadedModel,
    item: tuple[int, list[tuple[str, str]]],
    sampling: SamplingConfig,
    seed: int,
    prefix: str,
    grammar: str | None = None,
):
    """Completions of one batch of prompts, seeded by the batch's index (the same wherever it runs); with a
    grammar (a regex), constrained to it (compiled where the work runs: a constraint holds its tokenizer)."""
    b, batch = item
    torch.manual_seed(stable_seed(seed, prefix, b))
    return generate(
        lm,
        [lm.format_prompt(x) for _, x in batch],
        max_new_tokens=sampling.max_new_tokens,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        batch_size=sampling.batch_size,
        constraint=None if grammar is None else regex_constraint(lm.tokenizer, grammar),
    )
