"""`seal arc select`: the ARC tasks a model can learn, chosen by measurement, split into training and
evaluation tasks.

Candidates are the tasks of the source files whose grids are small (every side at most `max_side`),
whose outputs keep their inputs' shape (a colour or geometric rule, when `same_shape`), with one test
input, and whose demonstrations and query fit in `max_prompt_tokens`. Each candidate is trained on
with the oracle configuration `tries` times (different seeds) and predicted by voting, as `seal arc eval`
does; a task solved at least `min_solved` times is kept. The kept tasks are split in the proportion
`eval_fraction`, by a fixed hash of their id, into training and evaluation tasks, written as Kaggle-format
files in the run directory (`tasks/{train,eval}_{challenges,solutions}.json`) that `seal arc eval` and
`seal arc train` read.

Choosing tasks by the oracle favours the oracle: on these tasks it is at least `min_solved / tries` by
construction, as on the paper's curated sets, which were filtered the same way.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

from rich.console import Console

from seal.cluster import make_executor
from seal.config import ArcSelectConfig
from seal.domains.arc.format import prompt
from seal.domains.arc.grids import Task
from seal.domains.arc.selfedit import plan_json
from seal.experiments.arc_steps import ArcItem, ArcSteps, load_arc, record_key
from seal.experiments.steps import Experiment, open_run
from seal.models import ModelOnDemand, load_tokenizer_view

TASKS_DIR = "tasks"
PHASE = "oracle"


def is_candidate(task: Task, cfg: ArcSelectConfig, count_tokens) -> bool:
    """Small grids, outputs of their inputs' shape (when asked), one test input, a prompt that fits."""
    pairs = [*task.train, *task.test]
    grids = [g for p in pairs for g in (p.input, p.output) if g is not None]
    if len(task.test) != 1 or any(len(g) > cfg.max_side or len(g[0]) > cfg.max_side for g in grids):
        return False
    if cfg.same_shape and any(len(p.input) != len(p.output) or len(p.input[0]) != len(p.output[0]) for p in pairs):
        return False
    return count_tokens(prompt(task.train, task.test[0].input, cfg.ttt.style)) <= cfg.max_prompt_tokens


def held_out(task_ids: list[str], fraction: float) -> set[str]:
    """The ids held out for evaluation: `fraction` of them (at least one, and at least one left for training,
    once there are two), those first in a fixed order by a hash of the id, so the same tasks are held out on
    every machine. Deciding task by task (hash below the fraction) leaves a few kept tasks split at random
    proportions: 3 to 1 at one half on this model's four."""
    if len(task_ids) < 2:
        return set()
    n = min(len(task_ids) - 1, max(1, round(fraction * len(task_ids))))
    return set(sorted(task_ids, key=lambda i: (zlib.crc32(i.encode()), i))[:n])


class ArcSelect(Experiment):
    """`seal arc select`: oracle test-time training on small candidate tasks; the solved ones, split."""

    def __init__(self, cfg: ArcSelectConfig, out: str | Path, console: Console | None = None):
        self.cfg, self.console = cfg, console or Console()
        tokenizer = load_tokenizer_view(cfg.model).tokenizer
        pool: dict[str, Task] = {}
        for source in cfg.sources:
            for task in load_arc(source):
                pool.setdefault(task.id, task)
        candidates = [t for _, t in sorted(pool.items()) if is_candidate(t, cfg, lambda s: len(tokenizer(s).input_ids))]
        self.candidates = candidates[: cfg.candidates]
        self.store = open_run(out, cfg)
        self.executor = make_executor(cfg.executor, ModelOnDemand(cfg.model))
        self.steps = ArcSteps(self.store, self.executor, cfg, self.console)

    def run(self) -> dict:
        """Train and predict what is not in the store yet; write the task files and return the selection."""
        o = self.cfg.oracle
        text = plan_json(tuple(o.families), o.strategy, o.lr, o.epochs)
        items = [ArcItem(record_key(PHASE, t, i), t, text) for t in self.candidates for i in range(self.cfg.tries)]
        with self.store, self.executor:
            with self.store.timed("select"):
                self.steps.adapt(items, f"oracle test-time training on {len(self.candidates)} candidate tasks")
            return self.store.write_results(self.select())

    def select(self) -> dict:
        answers = self.store.all("answers")
        solved = {
            t.id: sum(answers[record_key(PHASE, t, i)]["solved"] for i in range(self.cfg.tries))
            for t in self.candidates
        }
        kept = [t for t in self.candidates if solved[t.id] >= self.cfg.min_solved]
        evaluation = held_out([t.id for t in kept], self.cfg.eval_fraction)
        split = {"eval": [t for t in kept if t.id in evaluation], "train": [t for t in kept if t.id not in evaluation]}
        files = {name: self.write_tasks(name, tasks) for name, tasks in split.items()}
        return {
            "schema": "seal.arc.select/1",
            "model": self.cfg.model.name,
            "n_candidates": len(self.candidates),
            "tries": self.cfg.tries,
            "solved": solved,
            "kept": [t.id for t in kept],
            "train": [t.id for t in split["train"]],
            "eval": [t.id for t in split["eval"]],
            "files": files,
            "seconds": self.store.get("timing", "select"),
        }

    def write_tasks(self, name: str, tasks: list[Task]) -> dict[str, str]:
        """Kaggle-format challenges and solutions files of `tasks`; their paths."""
        folder = self.store.dir / TASKS_DIR
        folder.mkdir(exist_ok=True)
        challenges = {
            t.id: {
                "train": [{"input": _lists(p.input), "output": _lists(p.output)} for p in t.train],
                "test": [{"input": _lists(p.input)} for p in t.test],
            }
            for t in tasks
        }
        solutions = {t.id: [_lists(p.output) for p in t.test] for t in tasks}
        paths = {"challenges": folder / f"{name}_challenges.json", "solutions": folder / f"{name}_solutions.json"}
        paths["challenges"].write_text(json.dumps(challenges))
        paths["solutions"].write_text(json.dumps(solutions))
        return {k: str(v) for k, v in paths.items()}


def _lists(grid) -> list[list[int]]:
    return [list(row) for row in grid]
