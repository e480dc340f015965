"""The steps every knowledge-incorporation experiment is made of, each resumable from a run store.

A step files its records under a key prefix (a condition name for `seal knowledge eval`,
`r1/train/implications` or `e1/base` for a ReST-EM round), so one store holds a whole run
and a re-run does only the keys that are missing.

- answer: closed-book (or in-context) answers of the current model, no adaptation;
- sample: k self-edits per passage, in fixed batches seeded by their index;
- adapt: one fresh adapter per plan, trained and scored K at a time.
"""

from __future__ import annotations

import statistics
import zlib
from dataclasses import dataclass

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from seal.cluster import Executor
from seal.config import AdaptConfig, AnswerConfig, SamplingConfig
from seal.domains import knowledge
from seal.domains.knowledge import Passage
from seal.grading import LLMJudge
from seal.loop import AdaptJob, Probe, adapt_batch, regroup, score_probes, work_batches
from seal.models import LoadedModel
from seal.sampling import generate
from seal.store import RunStore


ANSWER_CHUNK = 16  # passages answered per unit of work (and per transaction)


def stable_seed(*parts: object) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode()) & 0x7FFFFFFF


def probes_for(lm: LoadedModel, passage: Passage, in_context: bool = False) -> list[Probe]:
    return [
        Probe(
            question=q.question,
            gold=q.answer,
            prompt=knowledge.answer_prompt(lm, passage, q, in_context),
            continuation=knowledge.gold_continuation(lm, q),
        )
        for q in passage.questions
    ]


def progress_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
    )


def sample_self_edits(
    store: RunStore,
    executor: Executor,
    prefix: str,
    wanted: list[tuple[str, str]],
    sampling: SamplingConfig,
    seed: int,
    console: Console,
) -> None:
    """A completion of each (key, prompt) filed as self-edit `{prefix}/{key}`. Batch b is seeded by
    (seed, prefix, b) and written in one transaction, so a resumed run samples exactly what the
    interrupted one would have."""
    batches = [wanted[s : s + sampling.batch_size] for s in range(0, len(wanted), sampling.batch_size)]
    done = store.keys("self_edits")
    todo = [(b, batch) for b, batch in enumerate(batches) if any(f"{prefix}/{key}" not in done for key, _ in batch)]
    if not todo:
        return
    with progress_bar(console) as progress:
        task = progress.add_task(f"{prefix}: writing self-edits", total=sum(len(b) for _, b in todo))
        for (_, batch), texts in executor.map(sample_work, todo, sampling, seed, prefix):
            store.put_many("self_edits", [(f"{prefix}/{key}", {"prompt": x, "text": t}) for (key, x), t in zip(batch, texts)])
            progress.advance(task, len(batch))


@dataclass
class PlanItem:
    """One adaptation to run: train on `documents`, answer the questions of `passages`, file under `key`."""

    key: str
    passages: list[Passage]
    documents: list[str]


class KnowledgeSteps:
    def __init__(
        self,
        store: RunStore,
        executor: Executor,
        *,
        adapt: AdaptConfig,
        answer: AnswerConfig,
        judge: LLMJudge | None,
        seed: int,
        console: Console,
    ):
        self.store, self.executor = store, executor  # the model is loaded on first need: a finished run loads nothing
        self.adapt_cfg, self.answer_cfg, self.judge = adapt, answer, judge
        self.seed, self.console = seed, console

    @classmethod
    def for_config(cls, cfg, store: RunStore, executor: Executor, console: Console) -> KnowledgeSteps:
        """From any knowledge command's config (its adapt, answer, judge and seed fields)."""
        judge = LLMJudge(cfg.judge) if cfg.judge else None
        return cls(store, executor, adapt=cfg.adapt, answer=cfg.answer, judge=judge, seed=cfg.seed, console=console)

    def answer(self, prefix: str, passages: list[Passage], in_context: bool = False) -> None:
        """Answers filed as `{prefix}/{passage}/0`, one transaction per chunk of passages."""
        todo = [p for p in passages if self.store.get("answers", f"{prefix}/{p.key}/0") is None]
        if not todo:
            return
        lm = self.executor.tokenizer_view()
        chunks = [todo[s : s + ANSWER_CHUNK] for s in range(0, len(todo), ANSWER_CHUNK)]
        items = [[(p.key, probes_for(lm, p, in_context)) for p in chunk] for chunk in chunks]
        with progress_bar(self.console) as progress:
            task = progress.add_task(f"{prefix}: answering", total=len(todo))
            for item, records in self.executor.map(answer_work, items, self.answer_cfg, self.judge):
                self.store.put_many("answers", [(f"{prefix}/{key}/0", r) for (key, _), r in zip(item, records)])
                progress.advance(task, len(item))

    def sample(self, prefix: str, passages: list[Passage], variant: str, sampling: SamplingConfig) -> None:
        """k self-edits per passage filed as `{prefix}/{passage}/{i}`."""
        wanted = [(f"{p.key}/{i}", knowledge.self_edit_prompt(p, variant)) for p in passages for i in range(sampling.k)]
        sample_self_edits(self.store, self.executor, prefix, wanted, sampling, self.seed, self.console)

    def adapt(self, items: list[PlanItem], label: str = "adapting and scoring") -> None:
        """Each item's adapted answers filed under its key, one transaction per batch of adapters.

        The batches are cut from the whole list, finished or not, so a resumed run trains
        exactly the batches the uninterrupted one would have (same neighbours, same numerics)."""
        if not items:
            return
        done = self.store.keys("answers")
        if all(item.key in done for item in items):
            return
        lm = self.executor.tokenizer_view()
        jobs = [
            AdaptJob(
                item.key, item.documents, [q for p in item.passages for q in probes_for(lm, p)], stable_seed(self.seed, item.key)
            )
            for item in items
        ]
        batches = work_batches(jobs, self.adapt_cfg, done)
        adapter_dir = self.store.dir / "adapters" if self.adapt_cfg.keep_adapters else None
        with progress_bar(self.console) as progress:
            task = progress.add_task(label, total=sum(len(b) for b in batches))
            for _, results in self.executor.map(adapt_batch, batches, self.adapt_cfg, self.answer_cfg, self.judge, adapter_dir):
                self.store.put_many("answers", [(r.key, r.probes) for r in results])
                self.store.put_many(
                    "adapt",
                    [
                        (r.key, {"loss_first": r.losses[0], "loss_last": r.losses[1], "steps": r.steps, "seconds": r.seconds})
                        for r in results
                    ],
                )
                progress.advance(task, len(results))


def answer_work(lm: LoadedModel, item: list[tuple[str, list[Probe]]], answer: AnswerConfig, judge: LLMJudge | None):
    """Per passage of the chunk, the records of its probes (unadapted model)."""
    probes = [p for _, group in item for p in group]
    return regroup(score_probes(lm, probes, answer, judge=judge), [len(group) for _, group in item])


def sample_work(lm: LoadedModel, item: tuple[int, list[tuple[str, str]]], sampling: SamplingConfig, seed: int, prefix: str):
    """Completions of one batch of prompts, seeded by the batch's index (the same wherever it runs)."""
    b, batch = item
    torch.manual_seed(stable_seed(seed, prefix, b))
    return generate(
        lm,
        [lm.format_prompt(x) for _, x in batch],
        max_new_tokens=sampling.max_new_tokens,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        batch_size=sampling.batch_size,
    )


def mean(xs: list[float]) -> float:
    return statistics.fmean(xs) if xs else float("nan")


def summarise_conditions(
    answers: dict[str, list[dict]],
    adapt: dict[str, dict],
    passages: list[Passage],
    conditions: list[str],
    metrics: list[str],
    reward: str,
    prefix: str = "",
) -> tuple[dict[str, dict], dict[str, dict[str, dict[str, float]]]]:
    """Per condition: macro (over passages) and micro (over questions) means, and the gain over
    `base` in the reward metric; per passage: each condition's scores. Keys are `{prefix}{condition}/...`."""
    per_passage: dict[str, dict[str, dict[str, float]]] = {p.key: {} for p in passages}
    summary: dict[str, dict] = {}
    for condition in conditions:
        passage_means: dict[str, list[float]] = {m: [] for m in metrics}
        question_values: dict[str, list[float]] = {m: [] for m in metrics}
        seconds, n_runs = [], 0
        for p in passages:
            start = f"{prefix}{condition}/{p.key}/"
            runs = [v for k, v in answers.items() if k.startswith(start)]
            n_runs += len(runs)
            seconds += [v["seconds"] for k, v in adapt.items() if k.startswith(start)]
            # A passage's score under a condition: the mean over its self-edits of the mean over its questions.
            per_passage[p.key][condition] = {m: mean([mean([q[m] for q in run]) for run in runs]) for m in metrics}
            for m in metrics:
                passage_means[m].append(per_passage[p.key][condition][m])
                question_values[m] += [q[m] for run in runs for q in run]
        summary[condition] = {
            "macro": {m: mean(passage_means[m]) for m in metrics},
            "micro": {m: mean(question_values[m]) for m in metrics},
            "n_self_edits": n_runs if seconds else 0,
            "seconds_per_self_edit": mean(seconds) if seconds else None,
        }
    for condition in conditions:
        gains = [per_passage[p.key][condition][reward] - per_passage[p.key]["base"][reward] for p in passages]
        summary[condition]["gain"] = mean(gains)
        summary[condition]["gain_std"] = statistics.pstdev(gains) if gains else float("nan")
    return summary, per_passage
