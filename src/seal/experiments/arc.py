"""Few-shot learning on ARC: self-edits that choose augmentations and training settings.

Conditions on a set of tasks:
- in-context: the model predicts from the demonstrations alone (augmented voting, no training);
- self-edit: the policy writes k configurations per task; each is parsed, turned into
  test-time-training data, trained as one adapter, and the adapted model predicts;
- oracle: the same with one fixed configuration (every augmentation, a good lr and epochs).
A (task, self-edit) pair is solved when every test input's solution is among its attempts;
the success rate is solved pairs / all pairs, as in the paper. Invalid self-edits count as
unsolved and are recorded with their reason.

`seal arc train` adds ReST-EM rounds: k self-edits per training task, keep those that solve
their task, fine-tune the policy on them, evaluate every policy on the held-out tasks.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from seal.adapters import AdapterBank
from seal.cluster import Executor, make_executor
from seal.config import ArcDataConfig, ArcEvalConfig, ArcRunConfig, ArcTrainConfig
from seal.domains.arc import ttt
from seal.domains.arc.format import tokens_per_grid
from seal.domains.arc.grids import Task, load_tasks
from seal.domains.arc.selfedit import ArcPlan, parse_self_edit, plan_json, self_edit_prompt
from seal.domains.knowledge import DataError
from seal.experiments.knowledge_steps import mean, progress_bar, sample_self_edits, stable_seed
from seal.loop import job_batches, regroup, train_and_score
from seal.models import LoadedModel, ModelOnDemand
from seal.policy import PolicyOnDemand, run_rounds, select
from seal.sampling import generate
from seal.store import RunStore
from seal.training import TrainJob

RESULTS_FILE = "results.json"


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


def predict(lm: LoadedModel, cfg: ArcRunConfig, tasks: list[Task], seeds: list[int], bank=None, slots=None) -> list[list]:
    """Voted attempts per test input of each task; task i's views routed to slots[i] when given."""
    t_cfg = cfg.ttt
    bos = lm.tokenizer.bos_token if _adds_bos(lm.tokenizer) else ""
    all_views = [ttt.views(task, t_cfg.views, t_cfg.style, seed) for task, seed in zip(tasks, seeds)]
    prompts = [bos + v.prompt for views in all_views for v in views]
    rows = None if slots is None else [s for s, views in zip(slots, all_views) for _ in views]
    budget = max(_output_budget(lm, cfg, task) for task in tasks)
    outputs = generate(lm, prompts, max_new_tokens=budget, batch_size=t_cfg.batch_size, bank=bank, slots=rows)
    return [
        ttt.attempts_from_outputs(task, views, texts, t_cfg.style, t_cfg.attempts)
        for task, views, texts in zip(tasks, all_views, regroup(outputs, [len(v) for v in all_views]))
    ]


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


def adapt_work(lm: LoadedModel, batch: list[ArcJob], cfg: ArcRunConfig) -> list[dict]:
    """Test-time training of one adapter per job, `adapt.slots` at a time, and voted predictions of
    each adapted model, `adapt.slots` models per batched pass."""
    bank = AdapterBank.attach(lm.model, cfg.adapt.lora, cfg.adapt.slots)
    began = time.perf_counter()
    train_jobs = [TrainJob(j.documents, stable_seed(cfg.seed, j.key), j.plan.lr, j.plan.epochs) for j in batch]
    seeds = [stable_seed(cfg.seed, "views", j.key) for j in batch]
    attempts: dict[int, list] = {}

    def score(group: list[int]) -> None:
        tasks, group_seeds = [batch[j].task for j in group], [seeds[j] for j in group]
        attempts.update(zip(group, predict(lm, cfg, tasks, group_seeds, bank=bank, slots=list(range(len(group))))))

    stats = train_and_score(lm, bank, train_jobs, cfg.adapt, score)
    share = (time.perf_counter() - began) / len(batch)
    return [
        _record(j.task, attempts[s], valid=True, plan=j.plan.raw, examples=len(j.documents), steps=len(stats.losses[s]),
                loss=stats.first_last(s), seconds=share)
        for s, j in enumerate(batch)
    ]  # fmt: skip


class ArcSteps:
    def __init__(self, store: RunStore, executor: Executor, cfg: ArcRunConfig, console: Console):
        self.store, self.executor, self.cfg, self.console = store, executor, cfg, console

    def sample(self, prefix: str, tasks: list[Task], k: int) -> None:
        wanted = [(f"{t.key}/{i}", self_edit_prompt(t, self.cfg.ttt.style)) for t in tasks for i in range(k)]
        sample_self_edits(self.store, self.executor, prefix, wanted, self.cfg.sampling, self.cfg.seed, self.console)

    def in_context(self, prefix: str, tasks: list[Task]) -> None:
        todo = [t for t in tasks if self.store.get("answers", f"{prefix}/{t.key}/0") is None]
        if not todo:
            return
        items = [(t, stable_seed(self.cfg.seed, prefix, t.key)) for t in todo]
        with progress_bar(self.console) as progress:
            job = progress.add_task(f"{prefix}: predicting", total=len(todo))
            for (task, _), record in self.executor.map(in_context_work, items, self.cfg):
                self.store.put("answers", f"{prefix}/{task.key}/0", record)
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
        batches = job_batches(valid, self.cfg.adapt.unit, done, steps=lambda j: len(j.documents) * j.plan.epochs)
        with progress_bar(self.console) as progress:
            task = progress.add_task(label, total=sum(len(b) for b in batches))
            for batch, records in self.executor.map(adapt_work, batches, self.cfg):
                self.store.put_many("answers", [(j.key, r) for j, r in zip(batch, records)])
                progress.advance(task, len(batch))


def _adds_bos(tokenizer) -> bool:
    ids = tokenizer("a").input_ids
    return tokenizer.bos_token_id is not None and bool(ids) and ids[0] == tokenizer.bos_token_id


# --- summaries ---------------------------------------------------------------------------------------


def condition_summary(answers: dict[str, dict], prefix: str, tasks: list[Task]) -> dict:
    """Success rate over (task, self-edit) pairs, the fraction of tasks solved by any, and invalid plans."""
    per_task = {t.id: [v for k, v in answers.items() if k.startswith(f"{prefix}/{t.key}/")] for t in tasks}
    pairs = [r for rs in per_task.values() for r in rs]
    seconds = [r["seconds"] for r in pairs if "seconds" in r]
    return {
        "success_rate": mean([float(r["solved"]) for r in pairs]),
        "tasks_solved": mean([float(any(r["solved"] for r in rs)) for rs in per_task.values()]),
        "pairs": len(pairs),
        "invalid": sum(not r["valid"] for r in pairs),
        "seconds_per_pair": mean(seconds) if seconds else None,
        "per_task": {task: [r["solved"] for r in rs] for task, rs in per_task.items()},
        "invalid_reasons": sorted({r["reason"] for r in pairs if not r["valid"]}),
    }


def _evaluate(steps: ArcSteps, cfg: ArcRunConfig, prefix: str, tasks: list[Task], k: int, conditions: list[str]) -> None:
    if "in-context" in conditions:
        steps.in_context(f"{prefix}in-context", tasks)
    items = []
    if "self-edit" in conditions:
        steps.sample(f"{prefix}self-edit", tasks, k)
        sampled = steps.store.all("self_edits")
        items += [ArcItem(f"{prefix}self-edit/{t.key}/{i}", t, sampled[f"{prefix}self-edit/{t.key}/{i}"]["text"])
                  for t in tasks for i in range(k)]  # fmt: skip
    if "oracle" in conditions:
        o = cfg.oracle
        text = plan_json(tuple(o.families), o.strategy, o.lr, o.epochs)
        items += [ArcItem(f"{prefix}oracle/{t.key}/0", t, text) for t in tasks]
    steps.adapt(items, f"{prefix or 'tasks'}: test-time training")


class ArcEval:
    def __init__(self, cfg: ArcEvalConfig, out: str | Path, console: Console | None = None):
        self.cfg, self.console = cfg, console or Console()
        self.tasks = load_arc(cfg.data)
        self.store = RunStore(out, cfg)
        self.executor = make_executor(cfg.executor, ModelOnDemand(cfg.model))
        self.steps = ArcSteps(self.store, self.executor, cfg, self.console)

    def run(self) -> dict:
        try:
            with self.store.timed("eval"):
                _evaluate(self.steps, self.cfg, "", self.tasks, self.cfg.k, list(self.cfg.conditions))
        finally:
            self.executor.close()
        answers = self.store.all("answers")
        results = {
            "schema": "seal.arc.eval/1",
            "model": self.cfg.model.name,
            "n_tasks": len(self.tasks),
            "tasks": [t.id for t in self.tasks],
            "conditions": {c: condition_summary(answers, c, self.tasks) for c in self.cfg.conditions},
        }
        (self.store.dir / RESULTS_FILE).write_text(json.dumps(results, indent=2))
        return results


class ArcTrain:
    def __init__(self, cfg: ArcTrainConfig, out: str | Path, console: Console | None = None):
        self.cfg, self.console = cfg, console or Console()
        self.train_tasks, self.eval_tasks = load_arc(cfg.train_data), load_arc(cfg.eval_data)
        overlap = {t.id for t in self.train_tasks} & {t.id for t in self.eval_tasks}
        if overlap:
            raise DataError(f"{len(overlap)} task(s) are both training and held-out tasks, e.g. {sorted(overlap)[0]!r}")
        self.store = RunStore(out, cfg)
        self.policy = PolicyOnDemand(cfg.model, self.store)
        self.executor = make_executor(cfg.executor, self.policy)
        self.steps = ArcSteps(self.store, self.executor, cfg, self.console)

    def evaluate(self, p: int) -> None:
        self.policy.wanted = p
        conditions = ["self-edit", *(self.cfg.baselines if p == 0 else [])]
        with self.store.timed(f"e{p}"):
            _evaluate(self.steps, self.cfg, f"e{p}/", self.eval_tasks, self.cfg.eval_k, conditions)

    def train_round(self, r: int) -> None:
        cfg = self.cfg
        self.policy.wanted = r - 1
        prefix = f"r{r}/self-edit"
        with self.store.timed(f"r{r}"):
            self.steps.sample(prefix, self.train_tasks, cfg.k)
            sampled = self.store.all("self_edits")
            items = [ArcItem(f"{prefix}/{t.key}/{i}", t, sampled[f"{prefix}/{t.key}/{i}"]["text"])
                     for t in self.train_tasks for i in range(cfg.k)]  # fmt: skip
            self.steps.adapt(items, f"round {r}: test-time training")
            if self.store.get("policy", f"r{r}") is None:
                answers = self.store.all("answers")
                examples = []
                for t in self.train_tasks:
                    rewards = {i: float(answers[f"{prefix}/{t.key}/{i}"]["solved"]) for i in range(cfg.k)}
                    examples += [(sampled[f"{prefix}/{t.key}/{i}"]["prompt"], sampled[f"{prefix}/{t.key}/{i}"]["text"])
                                 for i in select(rewards, "positive")]  # fmt: skip
                self.policy.fine_tune(r, examples, cfg.policy, stable_seed(cfg.seed, "sft", r), self.executor)

    def run(self) -> dict:
        run_rounds(self.cfg.rounds, self.evaluate, self.train_round, self.executor)
        answers, policies, timing = self.store.all("answers"), self.store.all("policy"), self.store.all("timing")
        rounds = []
        for p in range(self.cfg.rounds + 1):
            conditions = ["self-edit", *(self.cfg.baselines if p == 0 else [])]
            row = {
                "round": p,
                "eval": {c: condition_summary(answers, f"e{p}/{c}", self.eval_tasks) for c in conditions},
                "eval_seconds": timing.get(f"e{p}"),
            }
            if p >= 1:
                train = condition_summary(answers, f"r{p}/self-edit", self.train_tasks)
                row["train"] = train | {"sft_examples": policies[f"r{p}"]["examples"], "seconds": timing.get(f"r{p}")}
            rounds.append(row)
        results = {
            "schema": "seal.arc.train/1",
            "model": self.cfg.model.name,
            "n_train_tasks": len(self.train_tasks),
            "n_eval_tasks": len(self.eval_tasks),
            "rounds": rounds,
        }
        (self.store.dir / RESULTS_FILE).write_text(json.dumps(results, indent=2))
        return results

