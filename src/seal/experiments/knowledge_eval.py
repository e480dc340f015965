"""The paper's single-passage table: how much of a passage does the model absorb under each condition?

Conditions
- base: the unadapted model, closed-book;
- in-context: the passage in the prompt (an upper bound for what training can reach);
- passage: a LoRA trained on the passage alone;
- one of the self-edit variants (implications, rewrite, self-qa, ...): the model writes k
  self-edits per passage, a LoRA is trained on each plan (self-edit documents + passage);
- file: the same with self-edits written elsewhere (a synthetic-data file's `completions`).
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from seal.cluster import make_executor
from seal.config import KnowledgeEvalConfig
from seal.domains import knowledge
from seal.domains.knowledge import Passage
from seal.experiments.knowledge_steps import (
    KnowledgeSteps,
    PlanItem,
    check_conditions,
    evaluation_table,
    file_self_edits,
    paired_comparisons,
    record_key,
    select_passages,
    summarise_conditions,
    training_documents,
)
from seal.experiments.steps import Experiment, open_run
from seal.grading import check_metric, metrics
from seal.models import ModelOnDemand
from seal.status import record_evaluation
from seal.store import RunStore

UNADAPTED = ("base", "in-context")
ADAPTED_FIXED = ("passage", "file")
KNOWN = UNADAPTED + ADAPTED_FIXED + knowledge.VARIANTS
RECORDS_FILE = "records.jsonl"


def validate(cfg: KnowledgeEvalConfig) -> None:
    check_conditions(cfg.conditions, KNOWN)
    check_metric(cfg.reward, cfg.judge)


class KnowledgeEval(Experiment):
    """`seal knowledge eval`: each condition's closed-book scores on the chosen passages."""

    def __init__(self, cfg: KnowledgeEvalConfig, out: str | Path, console: Console | None = None):
        validate(cfg)
        self.cfg = cfg
        self.console = console or Console()
        self.passages = select_passages(cfg.data, cfg.passages, cfg.paper_subset)
        self.from_file = file_self_edits(cfg, self.passages)
        self.store = open_run(out, cfg)
        self.executor = make_executor(cfg.executor, ModelOnDemand(cfg.model))
        self.steps = KnowledgeSteps.for_config(cfg, self.store, self.executor, self.console)

    def self_edits(self, condition: str, passage: Passage, sampled: dict[str, dict]) -> list[str]:
        if condition == "passage":
            return [""]
        if condition == "file":
            return self.from_file[passage.key]
        return [sampled[record_key(condition, passage, i)]["text"] for i in range(self.cfg.sampling.k)]

    def plan_items(self, conditions: list[str]) -> list[PlanItem]:
        sampled = self.store.all("self_edits")
        items = []
        for condition in conditions:
            variant = condition if condition in knowledge.VARIANTS else "implications"
            for passage in self.passages:
                for i, text in enumerate(self.self_edits(condition, passage, sampled)):
                    plan = knowledge.plan(passage, text, variant, self.cfg.split_lines)
                    items.append(PlanItem(record_key(condition, passage, i), [passage], training_documents(plan)))
        return items

    def run(self) -> dict:
        """Answer, sample, adapt and score what is not in the store yet; write and return the results."""
        conditions = list(dict.fromkeys(["base", *self.cfg.conditions]))  # base is needed for every gain
        with self.store, self.executor:
            for condition in conditions:
                if condition in UNADAPTED:
                    self.steps.answer(condition, self.passages, in_context=condition == "in-context")
            for condition in conditions:
                if condition in knowledge.VARIANTS:
                    self.steps.sample(condition, self.passages, condition, self.cfg.sampling)
            self.steps.adapt(self.plan_items([c for c in conditions if c not in UNADAPTED]))
            write_records(self.store, self.passages, conditions)
            results = summarise(self.cfg, self.passages, conditions, self.store)
            record_evaluation(self.store, "eval", lambda: evaluation_table(results["conditions"]))
            return self.store.write_results(results)


def summarise(cfg: KnowledgeEvalConfig, passages: list[Passage], conditions: list[str], store: RunStore) -> dict:
    summary, per_passage = summarise_conditions(
        store.all("answers"), store.all("adapt"), passages, conditions, metrics(cfg.judge), cfg.reward
    )
    return {
        "schema": "seal.knowledge.eval/1",
        "model": cfg.model.name,
        "reward": cfg.reward,
        "n_passages": len(passages),
        "n_questions": sum(len(p.questions) for p in passages),
        "conditions": summary,
        "paired": paired_comparisons(per_passage, conditions, metrics(cfg.judge)),
        "passages": [
            {"key": p.key, "source_index": p.source_index, "title": p.title, "scores": per_passage[p.key]}
            for p in passages
        ],
    }


def write_records(store: RunStore, passages: list[Passage], conditions: list[str]) -> None:
    """One line per (condition, passage, self-edit, question), with the unadapted answer beside the adapted one."""
    answers, self_edits = store.all("answers"), store.all("self_edits")
    by_key = {p.key: p for p in passages}
    with open(store.dir / RECORDS_FILE, "w") as f:
        for key, run in answers.items():
            condition, passage_key, index = key.split("/")
            if condition not in conditions or passage_key not in by_key:
                continue
            before = answers[record_key("base", by_key[passage_key])]
            edit = self_edits.get(key, {}).get("text")
            for qi, q in enumerate(run):
                row = {
                    "condition": condition,
                    "passage": passage_key,
                    "self_edit_index": int(index),
                    "question_index": qi,
                }
                row |= {"question": q["question"], "gold": q["gold"], "answer_before": before[qi]["answer"]}
                row |= {k: v for k, v in q.items() if k not in ("question", "gold")}
                if edit is not None and qi == 0:
                    row["self_edit"] = edit
                f.write(json.dumps(row) + "\n")
