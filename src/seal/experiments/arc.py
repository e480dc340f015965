"""Few-shot learning on ARC: self-edits that choose augmentations and training settings.

Conditions on a set of tasks:
- in-context: the model predicts from the demonstrations alone (augmented voting, no training);
- self-edit: the policy writes k configurations per task; each is parsed, turned into
  test-time-training data, trained as one adapter, and the adapted model predicts;
- oracle: the same with one fixed configuration (every augmentation, a good lr and epochs).
A (task, self-edit) pair is solved when every test input's solution is among its attempts;
the success rate is solved pairs / all pairs, as in the paper. Invalid self-edits count as
unsolved and are recorded with their reason.

`seal arc train` adds ReST-EM rounds (`seal.experiments.rest_em`, of which `ArcTrain` is the ARC domain): k
self-edits per training task, rewarded 1 when they solve their task (0 when not, None when they do not
parse), those kept by the config's selection rule (paper: those that solve) fine-tune the policy, and
every policy is evaluated on the held-out tasks.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from seal.cluster import make_executor
from seal.config import ArcEvalConfig, ArcRunConfig, ArcTrainConfig
from seal.domains.arc.grids import Task
from seal.domains.arc.selfedit import plan_json
from seal.errors import DataError
from seal.experiments.arc_steps import (
    ArcItem,
    ArcSteps,
    condition_summary,
    evaluation_table,
    load_arc,
    paired_tasks,
    record_key,
)
from seal.experiments.rest_em import ReSTEM, eval_phase
from seal.experiments.steps import Experiment, open_run
from seal.models import ModelOnDemand
from seal.policy import PolicyOnDemand
from seal.status import record_evaluation
from seal.store import key


def _evaluate(
    steps: ArcSteps, cfg: ArcRunConfig, prefix: str, tasks: list[Task], k: int, conditions: list[str]
) -> None:
    o = cfg.oracle
    oracle = plan_json(tuple(o.families), o.strategy, o.lr, o.epochs)
    plans = k * ("self-edit" in conditions) + ("oracle" in conditions)
    steps.warn_upfront(tasks, oracle, plans)
    if "in-context" in conditions:
        steps.in_context(f"{prefix}in-context", tasks)
    items = []
    if "self-edit" in conditions:
        steps.sample(f"{prefix}self-edit", tasks, k)
        sampled = steps.store.all("self_edits")
        keys = [(t, record_key(f"{prefix}self-edit", t, i)) for t in tasks for i in range(k)]
        items += [ArcItem(k, t, sampled[k]["text"]) for t, k in keys]
    if "oracle" in conditions:
        items += [ArcItem(record_key(f"{prefix}oracle", t), t, oracle) for t in tasks]
    steps.adapt(items, f"{prefix or 'tasks'}: test-time training")


def train_phase(r: int) -> str:
    """Where round r's training self-edits and their attempts are filed."""
    return f"r{r}/self-edit"


class ArcEval(Experiment):
    """`seal arc eval`: each condition's success rate on a set of ARC tasks."""

    def __init__(self, cfg: ArcEvalConfig, out: str | Path, console: Console | None = None):
        self.cfg, self.console = cfg, console or Console()
        self.tasks = load_arc(cfg.data)
        self.store = open_run(out, cfg)
        self.executor = make_executor(cfg.executor, ModelOnDemand(cfg.model))
        self.steps = ArcSteps(self.store, self.executor, cfg, self.console)

    def run(self) -> dict:
        """Predict, sample, train and score what is not in the store yet; write and return the results."""
        with self.store, self.executor:
            with self.store.timed("eval"):
                _evaluate(self.steps, self.cfg, "", self.tasks, self.cfg.k, list(self.cfg.conditions))
            answers = self.store.all("answers")
            conditions = {c: condition_summary(answers, c, self.tasks) for c in self.cfg.conditions}
            record_evaluation(self.store, "eval", lambda: evaluation_table(conditions))
            return self.store.write_results({
                "schema": "seal.arc.eval/1",
                "model": self.cfg.model.name,
                "n_tasks": len(self.tasks),
                "tasks": [t.id for t in self.tasks],
                "conditions": conditions,
                "paired": paired_tasks(conditions),
            })  # fmt: skip


class ArcTrain(Experiment):
    """`seal arc train`: ReST-EM rounds on training tasks, each policy evaluated on held-out tasks."""

    def __init__(self, cfg: ArcTrainConfig, out: str | Path, console: Console | None = None):
        self.cfg, self.console = cfg, console or Console()
        self.train_tasks, self.eval_tasks = load_arc(cfg.train_data), load_arc(cfg.eval_data)
        overlap = {t.id for t in self.train_tasks} & {t.id for t in self.eval_tasks}
        if overlap:
            raise DataError(f"{len(overlap)} task(s) are both training and held-out tasks, e.g. {sorted(overlap)[0]!r}")
        self.store = open_run(out, cfg)
        self.policy = PolicyOnDemand(cfg.model, self.store)
        self.executor = make_executor(cfg.executor, self.policy)
        self.steps = ArcSteps(self.store, self.executor, cfg, self.console)

    def conditions(self, policy_round: int) -> list[str]:
        """What the held-out evaluation of a policy scores: its self-edits, and the baselines with policy 0."""
        return ["self-edit", *(self.cfg.baselines if policy_round == 0 else [])]

    # --- the domain of the outer loop (seal.experiments.rest_em.Domain) ------------------------------------------

    def contexts(self, r: int) -> list[Task]:
        return self.train_tasks

    def self_edits(self, r: int) -> str:
        return train_phase(r)

    def sample(self, r: int, tasks: list[Task]) -> None:
        self.steps.sample(train_phase(r), tasks, self.cfg.k)

    def _items(self, r: int, tasks: list[Task]) -> list[ArcItem]:
        sampled = self.store.all("self_edits")
        keys = [(t, record_key(train_phase(r), t, i)) for t in tasks for i in range(self.cfg.k)]
        return [ArcItem(k, t, sampled[k]["text"]) for t, k in keys]

    def adapt_and_score(self, r: int, tasks: list[Task]) -> None:
        self.steps.adapt(self._items(r, tasks), f"round {r}: test-time training")

    def rewards(self, r: int, tasks: list[Task]) -> dict[str, dict[int, list[float] | None]]:
        """1 for a self-edit that solves its task, 0 for one that does not (one test-time training each), None
        for one that gave no plan."""
        answers = self.store.all("answers")
        records = {t.key: [answers[record_key(train_phase(r), t, i)] for i in range(self.cfg.k)] for t in tasks}
        return {
            t: {i: [float(a["solved"])] if a["valid"] else None for i, a in enumerate(rs)} for t, rs in records.items()
        }

    def evaluate(self, policy_round: int) -> None:
        phase = eval_phase(policy_round)
        _evaluate(self.steps, self.cfg, phase + "/", self.eval_tasks, self.cfg.eval_k, self.conditions(policy_round))

    def _evaluation(self, policy_round: int) -> dict[str, dict]:
        answers, phase = self.store.all("answers"), eval_phase(policy_round)
        return {c: condition_summary(answers, key(phase, c), self.eval_tasks) for c in self.conditions(policy_round)}

    def evaluation_table(self, policy_round: int) -> dict[str, dict[str, dict]]:
        return evaluation_table(self._evaluation(policy_round))

    def evaluation_summary(self, policy_round: int) -> dict:
        return {"eval": self._evaluation(policy_round)}

    def training_summary(self, r: int, tasks: list[Task]) -> dict:
        """The success rate of the round's self-edits on the training tasks, and what they chose."""
        return condition_summary(self.store.all("answers"), train_phase(r), tasks)

    # --- the whole run ---------------------------------------------------------------------------

    def run(self) -> dict:
        """Every round not finished yet, then the results (also written to results.json)."""
        with self.store, self.executor:
            rounds = ReSTEM(self, self.cfg, self.store, self.policy, self.executor).run()
            table = {c: rounds[0]["eval"][c] for c in self.cfg.baselines}
            table |= {f"self-edit@{r['round']}": r["eval"]["self-edit"] for r in rounds}
            return self.store.write_results({
                "schema": "seal.arc.train/1",
                "model": self.cfg.model.name,
                "n_train_tasks": len(self.train_tasks),
                "n_eval_tasks": len(self.eval_tasks),
                "rounds": rounds,
                "paired": paired_tasks(table),
            })  # fmt: skip
