"""Adapt and score: train one fresh adapter per plan, then probe every adapted model, K at a time.

The base model is loaded once; adapters live in an `AdapterBank` and are reset in place,
so nothing touches the disk on the hot path. A slot whose plan is trained takes the next
plan at once; the trained adapters are set aside and their probes answered K models at a
time in the same batched generate/likelihood passes, each row routed to its own adapter.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from seal.adapters import AdapterBank
from seal.config import AdaptConfig, AnswerConfig
from seal.grading import LLMJudge, exact_match, token_f1, verdict
from seal.models import LoadedModel
from seal.sampling import Progress, continuation_logprobs, generate
from seal.training import TrainJob, TrainStats, train_adapters


@dataclass(frozen=True)
class Probe:
    """One closed-book question, ready for the model: the formatted prompt and the gold answer."""

    question: str
    gold: str
    prompt: str
    continuation: str  # the gold answer as the model would continue the prompt


@dataclass
class AdaptJob:
    key: str
    documents: list[str]
    probes: list[Probe]
    seed: int


def score_probes(
    lm: LoadedModel,
    probes: list[Probe],
    cfg: AnswerConfig,
    *,
    bank: AdapterBank | None = None,
    slots: list[int] | None = None,
    judge: LLMJudge | None = None,
    progress: Progress | None = None,
) -> list[dict]:
    """Greedy answers and grades for each probe (row i routed to slots[i] when given)."""
    answers = generate(
        lm,
        [p.prompt for p in probes],
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.batch_size,
        stop_at_newline=cfg.stop_at_newline,
        bank=bank,
        slots=slots,
        progress=progress,
    )
    logprobs = continuation_logprobs(
        lm, [p.prompt for p in probes], [p.continuation for p in probes], batch_size=cfg.batch_size, bank=bank, slots=slots
    )
    records = []
    for probe, answer, (logprob, n_tokens) in zip(probes, answers, logprobs):
        record = {
            "question": probe.question,
            "gold": probe.gold,
            "answer": answer,
            "em": exact_match(probe.gold, answer),
            "f1": token_f1(probe.gold, answer),
            "verdict": verdict(probe.gold, answer, probe.question),
            "logprob": logprob,
            "loglik": logprob / max(n_tokens, 1),
        }
        if judge is not None:
            record["judge"] = judge.verdict(probe.question, probe.gold, answer)
        records.append(record)
    return records


def regroup(flat: list, sizes: list[int]) -> list[list]:
    """`flat` cut back into consecutive groups of `sizes`: per-job results of one batched call
    made over every job's items in order."""
    items = iter(flat)
    return [[next(items) for _ in range(n)] for n in sizes]


def adapter_path(directory: Path, key: str) -> Path:
    return directory / key.replace("/", "__")


@dataclass
class AdaptResult:
    key: str
    probes: list[dict]
    losses: tuple[float, float]  # first and last training loss
    steps: int
    seconds: float  # this job's share of its batch's wall time


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
    answer: AnswerConfig,
    judge: LLMJudge | None = None,
    adapter_dir: Path | None = None,
) -> list[AdaptResult]:
    """Train one adapter per job of the batch, `adapt.slots` at a time, and score each adapted
    model on its probes, `adapt.slots` models per batched pass.
    With `adapter_dir`, each adapter is also saved there in peft format, under its job key."""
    if adapt.engine == "peft":
        from seal.baseline import adapt_and_score_peft

        return [r for rs in adapt_and_score_peft(lm, batch, adapt, answer, judge=judge, adapter_dir=adapter_dir) for r in rs]
    bank = AdapterBank.attach(lm.model, adapt.lora, adapt.slots)
    began = time.perf_counter()
    records: dict[int, list[dict]] = {}

    def score(group: list[int]) -> None:
        probes = [p for j in group for p in batch[j].probes]
        slots = [slot for slot, j in enumerate(group) for _ in batch[j].probes]
        scored = score_probes(lm, probes, answer, bank=bank, slots=slots, judge=judge)
        records.update(zip(group, regroup(scored, [len(batch[j].probes) for j in group])))

    def save(slot: int, j: int) -> None:
        bank.save(slot, adapter_path(adapter_dir, batch[j].key), base_model=lm.name)

    train_jobs = [TrainJob(j.documents, j.seed) for j in batch]
    stats = train_and_score(lm, bank, train_jobs, adapt, score, save if adapter_dir is not None else None)
    share = (time.perf_counter() - began) / len(batch)
    return [
        AdaptResult(job.key, records[j], stats.first_last(j), len(stats.losses[j]), share) for j, job in enumerate(batch)
    ]


def adapt_and_score(
    lm: LoadedModel,
    jobs: list[AdaptJob],
    adapt: AdaptConfig,
    answer: AnswerConfig,
    *,
    judge: LLMJudge | None = None,
    adapter_dir: Path | None = None,
    skip: set[str] = frozenset(),
) -> Iterator[list[AdaptResult]]:
    """Yields the results of each batch as soon as it is done; batches whose every key is in `skip`
    are left out (already done: resuming)."""
    for batch in work_batches(jobs, adapt, skip):
        yield adapt_batch(lm, batch, adapt, answer, judge, adapter_dir)
