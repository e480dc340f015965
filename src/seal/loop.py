"""Adapt and score: train one fresh adapter per plan, then probe every adapted model, K at a time.

The base model is loaded once; adapters live in an `AdapterBank` and are reset in place,
so nothing touches the disk on the hot path. A slot whose plan is trained takes the next
plan at once; the trained adapters are set aside and their probes answered K models at a
time in the same batched generate/likelihood passes, each row routed to its own adapter.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from seal.adapters import AdapterBank
from seal.config import AdaptConfig, AnswerConfig
from seal.grading import LLMJudge, exact_match, token_f1, verdict
from seal.models import LoadedModel
from seal.sampling import Progress, continuation_logprobs, generate
from seal.training import TrainJob, train_adapters


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


def adapter_path(directory: Path, key: str) -> Path:
    return directory / key.replace("/", "__")


@dataclass
class AdaptResult:
    key: str
    probes: list[dict]
    losses: tuple[float, float]  # first and last training loss
    steps: int
    seconds: float  # this job's share of its batch's wall time


def job_batches(jobs: list, slots: int, skip: set[str] = frozenset()) -> list[list]:
    """Jobs (anything with .key and .documents) cut into batches of `slots`, plans of similar length
    together (a batch trains for as many steps as its longest plan). The cut depends on all jobs,
    done or not, so a resumed run trains exactly the batches the first run would have; batches
    whose every key is in `skip` are left out."""
    ordered = sorted(jobs, key=lambda j: len(j.documents), reverse=True)
    batches = [ordered[s : s + slots] for s in range(0, len(ordered), slots)]
    return [b for b in batches if any(j.key not in skip for j in b)]


def work_batches(jobs: list[AdaptJob], adapt: AdaptConfig, skip: set[str] = frozenset()) -> list[list[AdaptJob]]:
    """The unit of work: `adapt.slots * adapt.refill` jobs for one bank, whose slots take the next
    job of the unit as soon as theirs is trained (one job at a time for the peft baseline)."""
    if adapt.engine == "peft":
        return [[j] for j in jobs if j.key not in skip]
    return job_batches(jobs, adapt.slots * adapt.refill, skip)


def adapt_batch(
    lm: LoadedModel,
    batch: list[AdaptJob],
    adapt: AdaptConfig,
    answer: AnswerConfig,
    judge: LLMJudge | None = None,
    adapter_dir: Path | None = None,
) -> list[AdaptResult]:
    """Train one adapter per job of the batch, `adapt.slots` at a time, and score each adapted
    model on its probes: trained adapters are set aside as they finish and scored `slots` at a
    time in one batched pass, while training goes on in the slots.
    With `adapter_dir`, each adapter is also saved there in peft format, under its job key."""
    if adapt.engine == "peft":
        from seal.baseline import adapt_and_score_peft

        return [r for rs in adapt_and_score_peft(lm, batch, adapt, answer, judge=judge, adapter_dir=adapter_dir) for r in rs]
    bank = AdapterBank.attach(lm.model, adapt.lora, adapt.slots)
    began = time.perf_counter()
    trained: list[tuple[int, torch.Tensor]] = []  # (job, its adapter) waiting to be scored
    records: dict[int, list[dict]] = {}

    def score_trained() -> None:
        group = [j for j, _ in trained]
        with bank.holding([adapter for _, adapter in trained]):
            probes = [p for j in group for p in batch[j].probes]
            slots = [slot for slot, j in enumerate(group) for _ in batch[j].probes]
            scored = iter(score_probes(lm, probes, answer, bank=bank, slots=slots, judge=judge))
        for j in group:
            records[j] = [next(scored) for _ in batch[j].probes]
        trained.clear()

    def finished(slot: int, j: int) -> None:
        if adapter_dir is not None:
            bank.save(slot, adapter_path(adapter_dir, batch[j].key), base_model=lm.name)
        trained.append((j, bank.snapshot(slot)))
        if len(trained) == bank.slots:
            score_trained()

    stats = train_adapters(lm, bank, [TrainJob(j.documents, j.seed) for j in batch], adapt, finished)
    if trained:
        score_trained()
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
