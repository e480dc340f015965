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
from seal.experiments.steps import Experiment, open_run, stable_seed
from seal.models import ModelOnDemand
from seal.policy import PolicyOnDemand, policy_key, run_rounds, select
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


def eval_phase(policy_round: int) -> str:
    """Where the held-out evaluation of policy `policy_round` is filed (`e{p}/{condition}/...`)."""
    return f"e{policy_round}"


def selection_key(r: int, task: Task) -> str:
    """Where round r's choice among a training task's self-edits (their rewards, those kept) is recorded."""
    return f"r{r}/{task.key}"


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

    def evaluate(self, policy_round: int) -> None:
        self.policy.use(policy_round)
        phase = eval_phase(policy_round)
        with self.store.timed(phase):
            _evaluate(
                self.steps, self.cfg, phase + "/", self.eval_tasks, self.cfg.eval_k, self.conditions(policy_round)
            )

        def table() -> dict:
            answers = self.store.all("answers")
            conditions = self.conditions(policy_round)
            return evaluation_table({c: condition_summary(answers, key(phase, c), self.eval_tasks) for c in conditions})

        record_evaluation(self.store, phase, table)

    def train_round(self, r: int) -> None:
        cfg, phase = self.cfg, train_phase(r)
        self.policy.use(r - 1)
        with self.store.timed(f"r{r}"):
            self.steps.sample(phase, self.train_tasks, cfg.k)
            sampled = self.store.all("self_edits")
            keys = {t: [record_key(phase, t, i) for i in range(cfg.k)] for t in self.train_tasks}
            self.steps.adapt(
                [ArcItem(k, t, sampled[k]["text"]) for t, ks in keys.items() for k in ks],
                f"round {r}: test-time training",
            )
            if self.store.get("selections", selection_key(r, self.train_tasks[0])) is None:
                answers = self.store.all("answers")
                solved = {t: {i: float(answers[k]["solved"]) for i, k in enumerate(ks)} for t, ks in keys.items()}
                self.store.put_many(
                    "selections",
                    [(selection_key(r, t), {"rewards": list(s.values()), "kept": select(s, "positive")})
                     for t, s in solved.items()],
                )  # fmt: skip
            if self.store.get("policy", policy_key(r)) is None:
                selections = self.store.all("selections")
                examples = [
                    (sampled[ks[i]]["prompt"], sampled[ks[i]]["text"])
                    for t, ks in keys.items()
                    for i in selections[selection_key(r, t)]["kept"]
                ]
                self.policy.fine_tune(r, examples, cfg.policy, stable_seed(cfg.seed, "sft", r), self.executor)

    def run(self) -> dict:
        """Every round not finished yet, then the results (also written to results.json)."""
        with self.store, self.executor:
            run_rounds(self.cfg.rounds, self.evaluate, self.train_round)
            return self.store.write_results(self.summarise())

    def summarise(self) -> dict:
        answers, policies, timing = self.store.all("answers"), self.store.all("policy"), self.store.all("timing")
        rounds = []
        for policy_round in range(self.cfg.rounds + 1):
            phase = eval_phase(policy_round)
            row = {
                "round": policy_round,
                "eval": {
                    c: condition_summary(answers, key(phase, c), self.eval_tasks) for c in self.conditions(policy_round)
                },
                "eval_seconds": timing.get(phase),
            }
            if policy_round >= 1:
                train = condition_summary(answers, train_phase(policy_round), self.train_tasks)
                sft = policies[policy_key(policy_round)]
                row["train"] = train | {"sft_examples": sft["examples"], "seconds": timing.get(f"r{policy_round}")}
            rounds.append(row)
        table = {c: rounds[0]["eval"][c] for c in self.cfg.baselines}
        table |= {f"self-edit@{r['round']}": r["eval"]["self-edit"] for r in rounds}
        return {
            "schema": "seal.arc.train/1",
            "model": self.cfg.model.name,
            "n_train_tasks": len(self.train_tasks),
            "n_eval_tasks": len(self.eval_tasks),
            "rounds": rounds,
            "paired": paired_tasks(table),
        }
