"""`seal arc landscape`: how much the ARC self-edit's choices decide success, per task family.

Every configuration of a grid (augmentation switches x loss on all tokens or on the outputs x learning
rate x epochs) is trained on every task, as a fixed self-edit through the same steps as `seal arc eval`'s
oracle, and so are `random_plans` random valid self-edits per task (each switch a fair coin, the strategy
either one, the learning rate log-uniform over the three decades up to `ttt.max_lr` with one significant
digit, the epochs uniform from 1 to `ttt.max_epochs`). Per family: each configuration's success, the best
configuration, and its headroom over random self-edits (over the grid's mean without them), which is
how far a policy that learned to choose could rise. Generated tasks name their family in their id
(`seal.domains.arc.generate.family_of`); other tasks count as one family, "other".

The best configuration is chosen on the tasks it is measured on: its rate is optimistic there, and an
oracle for an evaluation split is to be chosen on the validation one (the default data).
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

from rich.console import Console

from seal.cluster import make_executor
from seal.config import ArcLandscapeConfig
from seal.domains.arc.generate import FAMILIES, family_of
from seal.domains.arc.grids import Task
from seal.domains.arc.selfedit import STRATEGIES, SWITCHES, plan_json
from seal.experiments.arc_steps import ArcItem, ArcSteps, condition_summary, load_arc, record_key
from seal.experiments.steps import Experiment, mean, open_run, stable_seed
from seal.models import ModelOnDemand
from seal.stats import paired_difference

RANDOM = "random"
Plan = tuple[tuple[str, ...], str, float, int]  # families, strategy, lr, epochs: plan_json's arguments


def grid_plans(cfg: ArcLandscapeConfig) -> list[Plan]:
    g = cfg.grid
    return [(tuple(a), s, lr, e) for a, s, lr, e in itertools.product(g.augmentations, g.strategies, g.lrs, g.epochs)]


def label(plan: Plan) -> str:
    families, strategy, lr, epochs = plan
    return f"{'+'.join(families) or 'none'}, {strategy}, lr {lr:g}, {epochs} ep"


def random_plan(rng: random.Random, max_lr: float, max_epochs: int) -> Plan:
    """A random valid self-edit (see the module doc)."""
    families = tuple(f for f in SWITCHES.values() if rng.random() < 0.5)
    lr = float(f"{max_lr * 10 ** rng.uniform(-3, 0):.1g}")
    return families, rng.choice(list(STRATEGIES.values())), min(lr, max_lr), rng.randint(1, max_epochs)


def per_family_tasks(tasks: list[Task], n: int | None) -> list[Task]:
    """The first n tasks of each family, in the tasks' order (all with None)."""
    seen: dict[str, int] = {}
    kept = []
    for t in tasks:
        family = family_of(t.id)
        seen[family] = seen.get(family, 0) + 1
        if n is None or seen[family] <= n:
            kept.append(t)
    return kept


class ArcLandscape(Experiment):
    """`seal arc landscape`: a grid of fixed configurations and random self-edits, scored per family."""

    def __init__(self, cfg: ArcLandscapeConfig, out: str | Path, console: Console | None = None):
        self.cfg, self.console = cfg, console or Console()
        self.tasks = per_family_tasks(load_arc(cfg.data), cfg.tasks_per_family)
        self.plans = grid_plans(cfg)
        self.store = open_run(out, cfg)
        self.executor = make_executor(cfg.executor, ModelOnDemand(cfg.model))
        self.steps = ArcSteps(self.store, self.executor, cfg, self.console)

    def random_plans(self, task: Task) -> list[Plan]:
        t = self.cfg.ttt
        seeds = [stable_seed(self.cfg.seed, RANDOM, task.key, i) for i in range(self.cfg.random_plans)]
        return [random_plan(random.Random(s), t.max_lr, t.max_epochs) for s in seeds]

    def items(self) -> list[ArcItem]:
        items = [
            ArcItem(record_key(f"grid{c}", t, i), t, plan_json(*plan))
            for c, plan in enumerate(self.plans)
            for t in self.tasks
            for i in range(self.cfg.tries)
        ]
        for t in self.tasks:
            items += [ArcItem(record_key(RANDOM, t, i), t, plan_json(*p)) for i, p in enumerate(self.random_plans(t))]
        return items

    def run(self) -> dict:
        """Train and score what is not in the store yet; write and return the landscape."""
        with self.store, self.executor:
            with self.store.timed("landscape"):
                per_task = len(self.plans) * self.cfg.tries + self.cfg.random_plans
                self.steps.warn_upfront(self.tasks, plan_json(*self.plans[-1]), per_task)
                label = f"landscape: {len(self.plans)} configurations on {len(self.tasks)} tasks"
                self.steps.adapt(self.items(), label)
            return self.store.write_results(self.summarise())

    def families(self) -> list[str]:
        present = {family_of(t.id) for t in self.tasks}
        return [f for f in [*FAMILIES, "other"] if f in present]

    def condition(self, answers: dict, phase: str) -> dict:
        summary = condition_summary(answers, phase, self.tasks)
        rates = dict(zip([t.id for t in self.tasks], summary["task_rates"]))
        per_family = {f: mean([r for task, r in rates.items() if family_of(task) == f]) for f in self.families()}
        keep = ("success_rate", "ci", "task_rates", "pairs", "invalid", "invalid_reasons", "seconds_per_pair")
        return {k: summary[k] for k in keep} | {"per_family": per_family}

    def summarise(self) -> dict:
        answers, families = self.store.all("answers"), self.families()
        configs = [
            {"name": f"grid{c}", "label": label(p), "families": list(p[0]), "strategy": p[1], "lr": p[2],
             "epochs": p[3]} | self.condition(answers, f"grid{c}")
            for c, p in enumerate(self.plans)
        ]  # fmt: skip
        grid_mean = {
            "success_rate": mean([c["success_rate"] for c in configs]),
            "per_family": {f: mean([c["per_family"][f] for c in configs]) for f in families},
        }
        chance = self.condition(answers, RANDOM) if self.cfg.random_plans else None
        baseline = chance or grid_mean
        best = {}
        for f in families:
            top = max(configs, key=lambda c: c["per_family"][f])  # ties: the first in the grid
            rate = top["per_family"][f]
            best[f] = {"config": top["name"], "label": top["label"], "success_rate": rate,
                       "headroom": rate - baseline["per_family"][f]}  # fmt: skip
        overall = max(configs, key=lambda c: c["success_rate"])
        paired = {}
        if chance:
            difference = paired_difference(overall["task_rates"], chance["task_rates"])
            paired[f"{overall['name']} (best) - random"] = {"success_rate": difference}
        return {
            "schema": "seal.arc.landscape/1",
            "model": self.cfg.model.name,
            "n_tasks": len(self.tasks),
            "tasks": [t.id for t in self.tasks],
            "tasks_per_family": {f: sum(family_of(t.id) == f for t in self.tasks) for f in families},
            "configs": configs,
            "grid_mean": grid_mean,
            "random": chance,
            "baseline": "random" if chance else "grid mean",
            "best": best,
            "oracle": {k: overall[k] for k in ("name", "label", "families", "strategy", "lr", "epochs")},
            "paired": paired,
            "seconds": self.store.get("timing", "landscape"),
        }
