"""Adapt and score: train one fresh adapter per plan, then probe every adapted model, K at a time.

The base model is loaded once; adapters live in an `AdapterBank` and are reset in place,
so nothing touches the disk on the hot path. A slot whose plan is trained takes the next
plan at once; the trained adapters are set aside and their probes answered K models at a
time in the same batched generate/likelihood passes, each row routed to its own adapter.
Nothing here knows a domain: a job is documents to train on and probes to score, with the
domain's scoring function handed in (`seal.engine.scoring.Scorer`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from seal.config import AdaptConfig
from seal.engine.adapters import AdapterBank
from seal.engine.plain import train_peft_adapter
from seal.engine.planner import resolved
from seal.engine.scoring import Scorer, regroup
from seal.engine.training import Document, TrainJob, TrainStats, train_adapters
from seal.models import LoadedModel


@dataclass
class AdaptJob:
    """One plan to adapt to and score: train a fresh adapter on `documents`, then score `probes` (what the
    domain's `Scorer` answers: questions, an ARC task)."""

    key: str
    documents: list[Document]
    probes: list
    seed: int  # fixes the adapter's initialisation and its document order
    lr: float | None = None  # the plan's own learning rate and epochs (an ARC self-edit chooses them)
    epochs: int | None = None


def adapter_path(directory: Path, key: str) -> Path:
    return directory / key.replace("/", "__")


@dataclass
class AdaptResult:
    """What adapting to one job gave: its probes' records and how its training went."""

    key: str
    probes: list[dict]
    losses: tuple[float, float]  # first and last training loss
    steps: int
    seconds: float  # this job's share of its batch's wall time

    def training_record(self) -> dict:
        """How the training went, as the run store files it under "adapt"."""
        return {"loss_first": self.losses[0], "loss_last": self.losses[1], "steps": self.steps, "seconds": self.seconds}


def job_batches(
    jobs: list, slots: int, skip: set[str] = frozenset(), steps: Callable[[Any], int] = lambda j: len(j.documents)
) -> list[list]:
    """Jobs (anything with .key and .documents) cut into batches of `slots`, plans of similar length
    together (`steps`: how many optimiser steps a job takes, up to a common factor; a group trains
    as long as its longest plan). The cut depends on all jobs, done or not, so a resumed run trains
    exactly the batches the first run would have; batches whose every key is in `skip` are left out."""
    ordered = sorted(jobs, key=steps, reverse=True)
    batches = [ordered[s : s + slots] for s in range(0, len(ordered), slots)]
    return [b for b in batches if any(j.key not in skip for j in b)]


def work_batches(jobs: list[AdaptJob], adapt: AdaptConfig, skip: set[str] = frozenset()) -> list[list[AdaptJob]]:
    """The unit of work: `adapt.slots * adapt.refill` jobs for one bank, whose slots take the next
    job of the unit as soon as theirs is trained (one job at a time for the peft baseline)."""
    if adapt.engine == "peft":
        return [[j] for j in jobs if j.key not in skip]
    return job_batches(jobs, adapt.unit, skip)


def train_and_score(
    lm: LoadedModel,
    bank: AdapterBank,
    jobs: list[TrainJob],
    adapt: AdaptConfig,
    score: Callable[[list[int]], None],
    on_trained: Callable[[int, int], None] | None = None,
) -> TrainStats:
    """Train one adapter per job (`train_adapters`: a slot whose plan is trained takes the next)
    and hand the trained adapters to `score(group)` `bank.slots` at a time while training goes on:
    during the call the adapter of job group[i] sits in slot i. `on_trained(slot, j)` sees each
    adapter where it was trained (to save it)."""
    if len(jobs) <= bank.slots:  # no slot is reused: job j's adapter stays in slot j, nothing to set aside
        stats = train_adapters(lm, bank, jobs, adapt, on_trained)
        if jobs:
            score(list(range(len(jobs))))
        return stats
    waiting: list[tuple[int, torch.Tensor]] = []  # (job, a copy of its trained adapter)

    def score_waiting() -> None:
        with bank.holding([adapter for _, adapter in waiting]):
            score([j for j, _ in waiting])
        waiting.clear()

    def finished(slot: int, j: int) -> None:
        if on_trained is not None:
            on_trained(slot, j)
        waiting.append((j, bank.snapshot(slot)))
        if len(waiting) == bank.slots:
            score_waiting()

    stats = train_adapters(lm, bank, jobs, adapt, finished)
    if waiting:
        score_waiting()
    return stats


def adapt_batch(
    lm: LoadedModel,
    batch: list[AdaptJob],
    adapt: AdaptConfig,
    score: Scorer,
    adapter_dir: Path | None = None,
) -> list[AdaptResult]:
    """Train one adapter per job of the batch, `adapt.slots` at a time, and score each adapted
    model on its probes, `adapt.slots` models per batched pass.

    Args:
        lm: the frozen base model (an adapter bank is installed in it, or reused).
        batch: the jobs: documents to train on, probes to score, a seed (and their own lr and epochs).
        adapt: the inner loop's settings (LoRA, epochs, lr, slots, refill, engine).
        score: the domain's scoring of adapted models on probes.
        adapter_dir: save each adapter there in peft format, under its job key.
    Returns:
        one `AdaptResult` per job, in the batch's order.
    """
    if adapt.engine == "peft":
        return [adapt_one_peft(lm, job, adapt, score, adapter_dir) for job in batch]
    adapt = resolved(lm, adapt)
    bank = AdapterBank.attach(lm.model, adapt.lora, adapt.slots)
    began = time.perf_counter()
    records: dict[int, list] = {}

    def score_group(group: list[int]) -> None:
        probes = [p for j in group for p in batch[j].probes]
        slots = [slot for slot, j in enumerate(group) for _ in batch[j].probes]
        scored = score(lm, probes, bank=bank, slots=slots)
        records.update(zip(group, regroup(scored, [len(batch[j].probes) for j in group])))

    def save(slot: int, j: int) -> None:
        bank.save(slot, adapter_path(adapter_dir, batch[j].key), base_model=lm.name)

    train_jobs = [TrainJob(j.documents, j.seed, j.lr, j.epochs) for j in batch]
    stats = train_and_score(lm, bank, train_jobs, adapt, score_group, save if adapter_dir is not None else None)
    share = (time.perf_counter() - began) / len(batch)
    return [
        AdaptResult(job.key, records[j], stats.first_last(j), len(stats.losses[j]), share)
        for j, job in enumerate(batch)
    ]


def adapt_one_peft(
    lm: LoadedModel, job: AdaptJob, adapt: AdaptConfig, score: Scorer, adapter_dir: Path | None
) -> AdaptResult:
    """The straightforward way (`adapt.engine: peft`, the benchmark's reference): a fresh peft
    adapter trained alone, its probes scored with it, then unloaded."""
    AdapterBank.detach_from(lm.model)
    began = time.perf_counter()
    own = {name: value for name, value in (("lr", job.lr), ("epochs", job.epochs)) if value is not None}
    model, losses = train_peft_adapter(lm, job.documents, job.seed, adapt.model_copy(update=own))
    if adapter_dir is not None:
        model.save_pretrained(adapter_path(adapter_dir, job.key))
    try:
        records = score(LoadedModel(model, lm.tokenizer, lm.name, lm.chat), job.probes)
    finally:
        model.unload()  # back to the plain base model, adapter discarded
    first_last = (losses[0], losses[-1]) if losses else (float("nan"), float("nan"))
    return AdaptResult(job.key, records, first_last, len(losses), time.perf_counter() - began)


def adapt_and_score(
    lm: LoadedModel,
    jobs: list[AdaptJob],
    adapt: AdaptConfig,
    score: Scorer,
    *,
    adapter_dir: Path | None = None,
    skip: set[str] = frozenset(),
) -> Iterator[list[AdaptResult]]:
    """Yields the results of each batch as soon as it is done; batches whose every key is in `skip`
    are left out (already done: resuming)."""
    adapt = resolved(lm, adapt)
    for batch in work_batches(jobs, adapt, skip):
        yield adapt_batch(lm, batch, adapt, score, adapter_dir)
