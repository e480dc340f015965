"""The steps every ARC experiment is made of: sample self-edits for tasks, predict in context, and adapt
to a plan (test-time training) and predict by voting; each resumable from a run store.

Record keys: `{phase}/{task}/{i}` for the i-th self-edit for a task in a phase (`self-edit`, `e1/self-edit`,
`r1/self-edit`, `oracle`, `in-context`, ...) and for its attempts.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from rich.console import Console

from seal.cluster import Executor
from seal.config import ArcDataConfig, ArcRunConfig
from seal.domains.arc import ttt
from seal.domains.arc.format import tokens_per_grid
from seal.domains.arc.grammar import arc_self_edit_regex
from seal.domains.arc.grids import Task, load_tasks
from seal.domains.arc.selfedit import ArcPlan, parse_self_edit, self_edit_prompt
from seal.engine.adapters import AdapterBank
from seal.engine.loop import AdaptJob, AdaptResult, adapt_batch, job_batches
from seal.engine.sampling import generate
from seal.engine.scoring import regroup
from seal.engine.structured import Constraint, regex_constraint
from seal.errors import DataError
from seal.experiments.steps import (
    TrainingProgress,
    estimated_seconds,
    mean,
    progress_bar,
    resample_self_edits,
    resolve_slots,
    sample_self_edits,
    stable_seed,
    training_tokens,
    warn_if_long,
)
from seal.models import LoadedModel
from seal.stats import bootstrap_ci, paired_conditions
from seal.status import begin_phase
from seal.store import RunStore, key

ARC_HINT = "On a laptop: configs/cpu-arc.yaml (minutes), or configs/cpu-tables-arc.yaml (the measured table)."


def arc_self_edit_constraint(tokenizer, max_lr: float = 1e-2, max_epochs: int = 10) -> Constraint:
    """ARC self-edits that `parse_self_edit(text, max_lr, max_epochs)` accepts, in a bounded number of tokens."""
    return regex_constraint(tokenizer, arc_self_edit_regex(max_lr, max_epochs))


def record_key(phase: str, task: Task, index: int = 0) -> str:
    """Where the `index`-th self-edit for a task in `phase` (`self-edit`, `e1/self-edit`, `r1/self-edit`,
    `oracle`, ...) and its attempts are filed (index 0 also for in-context attempts)."""
    return key(phase, task.key, index)


def load_arc(data: ArcDataConfig) -> list[Task]:
    tasks = load_tasks(data.challenges, data.solutions, data.ids)
    tasks = tasks if data.tasks is None else tasks[: data.tasks]
    unsolvable = [t.id for t in tasks if any(p.output is None for p in t.test)]
    if unsolvable:
        raise DataError(f"{data.challenges}: no solution for task {unsolvable[0]!r} (set data.solutions)")
    return tasks


@dataclass
class ArcItem:
    """One (task, self-edit) pair to adapt and score, filed under `key`."""

    key: str
    task: Task
    text: str


@dataclass
class ArcJob:
    key: str
    task: Task
    plan: ArcPlan
    documents: list


def predict(
    lm: LoadedModel, cfg: ArcRunConfig, tasks: list[Task], seeds: list[int], bank=None, slots=None
) -> list[list]:
    """Voted attempts per test input of each task; task i's views routed to slots[i] when given."""
    t_cfg = cfg.ttt
    all_views = [views_of(task, t_cfg, seed) for task, seed in zip(tasks, seeds)]
    prompts = [lm.bos + v.prompt for views in all_views for v in views]
    rows = None if slots is None else [s for s, views in zip(slots, all_views) for _ in views]
    budget = max(_output_budget(lm, cfg, task) for task in tasks)
    outputs = generate(lm, prompts, max_new_tokens=budget, batch_size=t_cfg.batch_size, bank=bank, slots=rows)
    return [
        ttt.attempts_from_outputs(task, views, texts, t_cfg.style, t_cfg.attempts, t_cfg.voting)
        for task, views, texts in zip(tasks, all_views, regroup(outputs, [len(v) for v in all_views]))
    ]


def views_of(task: Task, cfg, seed: int) -> list[ttt.View]:
    """The prompts a task's test inputs are predicted from: our symmetric views, or the release's."""
    if cfg.voting == "release":
        return ttt.release_views(task, cfg.style, seed)
    return ttt.views(task, cfg.views, cfg.style, seed)


def _output_budget(lm: LoadedModel, cfg: ArcRunConfig, task: Task) -> int:
    """Room for the largest grid the task suggests (a square of its largest side), capped."""
    side = max(max(len(g), len(g[0])) for p in task.train + task.test for g in (p.input, p.output) if g is not None)
    square = tuple(tuple([0] * side) for _ in range(side))
    return min(cfg.ttt.max_output_tokens, tokens_per_grid(lm.tokenizer, square, cfg.ttt.style) + 8)


def _record(task: Task, attempts: list[list], **extra) -> dict:
    return {
        "task": task.id,
        "solved": ttt.solved(task, attempts),
        "attempts": [[[list(row) for row in g] for g in tries] for tries in attempts],
        **extra,
    }


def in_context_work(lm: LoadedModel, item: tuple[Task, int], cfg: ArcRunConfig) -> dict:
    task, seed = item
    (attempts,) = predict(lm, cfg, [task], [seed])
    return _record(task, attempts, valid=True)


@dataclass(frozen=True)
class ArcScorer:
    """ARC's score of adapted models, as the engine's `Scorer`: the voted attempts at each (task, views seed)
    probe's test inputs, probe i predicted by the adapter in slots[i]."""

    cfg: ArcRunConfig

    def __call__(
        self,
        lm: LoadedModel,
        probes: list[tuple[Task, int]],
        *,
        bank: AdapterBank | None = None,
        slots: list[int] | None = None,
    ) -> list[list]:
        return predict(lm, self.cfg, [t for t, _ in probes], [seed for _, seed in probes], bank=bank, slots=slots)


def _settings(plan: ArcPlan) -> dict:
    return {"families": list(plan.families), "strategy": plan.strategy, "lr": plan.lr, "epochs": plan.epochs}


class ArcSteps:
    def __init__(self, store: RunStore, executor: Executor, cfg: ArcRunConfig, console: Console):
        self.store, self.executor, self.cfg, self.console = store, executor, cfg, console

    def sample(self, prefix: str, tasks: list[Task], k: int) -> None:
        """k self-edits per task (constrained to the self-edit's language with `self_edit.constrained`); those
        that do not parse (or, with `self_edit.unique`, repeat an earlier one for the task) sampled again up to
        `self_edit.resample_invalid` times."""
        cfg, t_cfg = self.cfg, self.cfg.ttt
        grammar = arc_self_edit_regex(t_cfg.max_lr, t_cfg.max_epochs) if cfg.self_edit.constrained else None
        prompts = {t.key: self_edit_prompt(t, t_cfg.style, t_cfg.max_lr, t_cfg.max_epochs) for t in tasks}
        wanted = [(key(t.key, i), prompts[t.key]) for t in tasks for i in range(k)]
        sample_self_edits(self.store, self.executor, prefix, wanted, cfg.sampling, cfg.seed, self.console, grammar)

        def parsed(text: str) -> ArcPlan:
            return parse_self_edit(text, max_lr=t_cfg.max_lr, max_epochs=t_cfg.max_epochs)

        def acceptable(within: str, sampled: dict[str, dict]) -> bool:
            task_key, index = within.rsplit("/", 1)
            plan = parsed(sampled[key(prefix, within)]["text"])
            if not plan.valid:
                return False
            earlier = [parsed(sampled[key(prefix, task_key, i)]["text"]) for i in range(int(index))]
            return not (cfg.self_edit.unique and any(p.valid and p.settings == plan.settings for p in earlier))

        resample_self_edits(
            self.store, self.executor, prefix, wanted, cfg.sampling, cfg.seed, self.console, acceptable,
            cfg.self_edit.resample_invalid, grammar,
        )  # fmt: skip

    def in_context(self, prefix: str, tasks: list[Task]) -> None:
        todo = [t for t in tasks if self.store.get("answers", record_key(prefix, t)) is None]
        if not todo:
            return
        items = [(t, stable_seed(self.cfg.seed, prefix, t.key)) for t in todo]
        label = f"{prefix}: predicting"
        begin_phase(self.store, label, "answer", "answers", [record_key(prefix, t) for t in tasks])
        with progress_bar(self.console) as progress:
            job = progress.add_task(label, total=len(todo))
            for (task, _), record in self.executor.map(in_context_work, items, self.cfg):
                self.store.put("answers", record_key(prefix, task), record)
                progress.advance(job)

    def job(self, lm: LoadedModel, item: ArcItem) -> ArcJob:
        t = self.cfg.ttt
        plan = parse_self_edit(item.text, max_lr=t.max_lr, max_epochs=t.max_epochs)
        data = ttt.training_documents(
            item.task, plan, style=t.style, leave_out=tuple(t.leave_out), max_examples=t.max_examples,
            batch_size=self.cfg.adapt.batch_size, max_steps=t.max_steps, seed=stable_seed(self.cfg.seed, item.key),
            fits_in_context=lambda text: len(lm.tokenizer(text).input_ids) < t.max_tokens,
        )  # fmt: skip
        return ArcJob(item.key, item.task, data.plan, data.documents)

    def warn_upfront(self, tasks: list[Task], reference_plan: str, plans_per_task: int) -> None:
        """Before any work: on a CPU, a run whose test-time training is estimated at over 15 minutes says so,
        its plans counted as costing what `reference_plan` (the oracle's) costs on each task."""
        if not plans_per_task or estimated_seconds(self.cfg.model, 1) is None:
            return
        lm = self.executor.tokenizer_view()
        jobs = [self.job(lm, ArcItem("estimate", t, reference_plan)) for t in tasks]
        tokens = plans_per_task * sum(training_tokens(lm, j.documents, j.plan.epochs, self.cfg.adapt) for j in jobs)
        warn_if_long(self.console, f"this run's test-time training ({plans_per_task} plans per task)", tokens,
                     self.cfg.model, ARC_HINT)  # fmt: skip

    def adapt(self, items: list[ArcItem], label: str) -> None:
        done = self.store.keys("answers")
        if all(item.key in done for item in items):
            return
        lm = self.executor.tokenizer_view()
        jobs = [self.job(lm, item) for item in items]
        self.store.put_many(
            "answers",
            [(j.key, {"task": j.task.id, "solved": False, "valid": False, "reason": j.plan.reason})
             for j in jobs if not j.plan.valid and j.key not in done],
        )  # fmt: skip
        # a self-edit chooses its epochs: group plans by the optimiser steps they take
        valid = [j for j in jobs if j.plan.valid]
        unit = resolve_slots(self.executor, self.cfg.adapt).unit
        batches = job_batches(valid, unit, done, steps=lambda j: len(j.documents) * j.plan.epochs)
        tokens = {j.key: training_tokens(lm, j.documents, j.plan.epochs, self.cfg.adapt) for b in batches for j in b}
        label = f"{label} ({len(valid)} plans)"
        begin_phase(self.store, label, "adapt", "answers", [item.key for item in items])
        unit_tokens = [sum(tokens[j.key] for j in b) for b in batches]
        units = [[self.adapt_job(j) for j in b] for b in batches]
        plans = {j.key: j for j in valid}
        with TrainingProgress(self.console, label, unit_tokens, self.cfg.model, ARC_HINT, self.store) as progress:
            unit_of = {id(unit): u for u, unit in enumerate(units)}
            for unit, results in self.executor.map(adapt_batch, units, self.cfg.adapt, ArcScorer(self.cfg)):
                records = [(r.key, self.record(plans[r.key], r) | {"tokens": tokens[r.key]}) for r in results]
                self.store.put_many("answers", records)
                progress.unit_done(unit_of[id(unit)])

    def adapt_job(self, job: ArcJob) -> AdaptJob:
        """A plan as the engine trains and scores it: its test-time-training data, its lr and epochs, and the
        task predicted from views seeded by the plan's key."""
        seed, views = stable_seed(self.cfg.seed, job.key), stable_seed(self.cfg.seed, "views", job.key)
        return AdaptJob(job.key, job.documents, [(job.task, views)], seed, job.plan.lr, job.plan.epochs)

    @staticmethod
    def record(job: ArcJob, result: AdaptResult) -> dict:
        (attempts,) = result.probes
        return _record(
            job.task, attempts, valid=True, plan=job.plan.raw, settings=_settings(job.plan),
            examples=len(job.documents), steps=result.steps, loss=result.losses, seconds=result.seconds,
        )  # fmt: skip


# --- summaries ---------------------------------------------------------------------------------------


def condition_summary(answers: dict[str, dict], prefix: str, tasks: list[Task]) -> dict:
    """Success rate over (task, self-edit) pairs, the fraction of tasks solved by any, and invalid plans."""
    per_task = {t.id: [v for k, v in answers.items() if k.startswith(key(prefix, t.key, ""))] for t in tasks}
    pairs = [r for rs in per_task.values() for r in rs]
    seconds = [r["seconds"] for r in pairs if "seconds" in r]
    task_rates = [mean([float(r["solved"]) for r in rs]) for rs in per_task.values()]
    return {
        "success_rate": mean([float(r["solved"]) for r in pairs]),
        "ci": bootstrap_ci(task_rates),  # of the mean over tasks of each task's success rate
        "task_rates": task_rates,
        "tasks_solved": mean([float(any(r["solved"] for r in rs)) for rs in per_task.values()]),
        "pairs": len(pairs),
        "invalid": sum(not r["valid"] for r in pairs),
        "seconds_per_pair": mean(seconds) if seconds else None,
        "per_task": {task: [r["solved"] for r in rs] for task, rs in per_task.items()},
        "invalid_reasons": sorted({r["reason"] for r in pairs if not r["valid"]}),
        "choices": choices(pairs),
    }


def choices(records: list[dict]) -> dict | None:
    """What the trained plans chose, and the learning rates of those that solved their task and those that did
    not: where a policy's success comes from, and what a ReST-EM round moved (None before any plan trained)."""
    chosen = [(r["settings"], r["solved"]) for r in records if "settings" in r]
    if not chosen:
        return None

    def median_lr(solved: bool | None) -> float | None:
        lrs = [s["lr"] for s, ok in chosen if solved is None or ok == solved]
        return statistics.median(lrs) if lrs else None

    return {
        "lr_median": median_lr(None),
        "lr_median_solved": median_lr(True),
        "lr_median_unsolved": median_lr(False),
        "epochs_median": statistics.median(s["epochs"] for s, _ in chosen),
        "output_loss": mean([float(s["strategy"] == "output") for s, _ in chosen]),
    }


def evaluation_table(conditions: dict[str, dict]) -> dict[str, dict[str, dict]]:
    """The table `seal.status.record_evaluation` files, from `condition_summary` per condition."""
    return {condition: {"success_rate": summary["ci"]} for condition, summary in conditions.items()}


def paired_tasks(conditions: dict[str, dict]) -> dict[str, dict]:
    """`seal.stats.paired_conditions` of the conditions' per-task success rates."""
    return paired_conditions({c: {"success_rate": summary["task_rates"]} for c, summary in conditions.items()})
