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

from seal.config import KnowledgeEvalConfig
from seal.domains import knowledge
from seal.domains.knowledge import DataError, Passage
from seal.experiments.knowledge_steps import (
    KnowledgeSteps,
    PlanItem,
    summarise_conditions,
)
from seal.cluster import make_executor
from seal.models import ModelOnDemand
from seal.store import RunStore

UNADAPTED = ("base", "in-context")
ADAPTED_FIXED = ("passage", "file")
KNOWN = UNADAPTED + ADAPTED_FIXED + knowledge.VARIANTS
RESULTS_FILE = "results.json"
RECORDS_FILE = "records.jsonl"


def metrics_for(judge: object | None) -> list[str]:
    return ["em", "f1", "verdict", "loglik"] + (["judge"] if judge else [])


def check_reward(reward: str, judge: object | None) -> None:
    available = metrics_for(judge)
    if reward not in available:
        raise ValueError(f"reward {reward!r} is not available; choose from {', '.join(sorted(available))}")


def validate(cfg: KnowledgeEvalConfig) -> None:
    unknown = [c for c in cfg.conditions if c not in KNOWN]
    if unknown:
        raise ValueError(f"unknown condition(s) {', '.join(unknown)}; choose from {', '.join(KNOWN)}")
    check_reward(cfg.reward, cfg.judge)


def select_passages(data: str, n: int | None, paper_subset: bool) -> list[Passage]:
    """The first n passages of the file (in the paper's subset order), each with questions to score."""
    passages = knowledge.load_passages(data)
    if paper_subset:
        chosen = knowledge.paper_subset(passages, n)
    else:
        chosen = passages if n is None else passages[:n]
    empty = [p for p in chosen if not p.questions]
    if empty:
        raise DataError(
            f"{data}: {len(empty)} of the chosen passages have no questions to score, "
            f"e.g. record {empty[0].source_index} ({empty[0].title!r})"
        )
    return chosen


def file_self_edits(cfg: KnowledgeEvalConfig, passages: list[Passage]) -> dict[str, list[str]]:
    """Self-edits for the 'file' condition, matched to the evaluated passages by their text."""
    source = knowledge.load_passages(cfg.self_edits_file) if cfg.self_edits_file else passages
    by_text = {(p.title, p.context): p.completions for p in source if p.completions is not None}
    out, missing = {}, []
    for p in passages:
        completions = by_text.get((p.title, p.context))
        if completions is None:
            missing.append(p.title)
        else:
            out[p.key] = completions[: cfg.sampling.k]
    if missing:
        where = cfg.self_edits_file or cfg.data
        raise DataError(f"{where}: no completions for {len(missing)} evaluated passage(s), e.g. {missing[0]!r}")
    return out


class KnowledgeEval:
    def __init__(self, cfg: KnowledgeEvalConfig, out: str | Path, console: Console | None = None):
        validate(cfg)
        self.cfg = cfg
        self.console = console or Console()
        self.passages = select_passages(cfg.data, cfg.passages, cfg.paper_subset)
        self.from_file = file_self_edits(cfg, self.passages) if "file" in cfg.conditions else {}
        self.store = RunStore(out, cfg)
        self.executor = make_executor(cfg.executor, ModelOnDemand(cfg.model))
        self.steps = KnowledgeSteps.for_config(cfg, self.store, self.executor, self.console)

    def self_edits(self, condition: str, passage: Passage, sampled: dict[str, dict]) -> list[str]:
        if condition == "passage":
            return [""]
        if condition == "file":
            return self.from_file[passage.key]
        return [sampled[f"{condition}/{passage.key}/{i}"]["text"] for i in range(self.cfg.sampling.k)]

    def plan_items(self, conditions: list[str]) -> list[PlanItem]:
        sampled = self.store.all("self_edits")
        items = []
        for condition in conditions:
            variant = condition if condition in knowledge.VARIANTS else "implications"
            for passage in self.passages:
                for i, text in enumerate(self.self_edits(condition, passage, sampled)):
                    plan = knowledge.plan(passage, text, variant, self.cfg.split_lines)
                    items.append(PlanItem(f"{condition}/{passage.key}/{i}", [passage], plan.documents))
        return items

    def run(self) -> dict:
        conditions = list(dict.fromkeys(["base", *self.cfg.conditions]))  # base is needed for every gain
        try:
            for condition in conditions:
                if condition in UNADAPTED:
                    self.steps.answer(condition, self.passages, in_context=condition == "in-context")
            for condition in conditions:
                if condition in knowledge.VARIANTS:
                    self.steps.sample(condition, self.passages, condition, self.cfg.sampling)
            self.steps.adapt(self.plan_items([c for c in conditions if c not in UNADAPTED]))
        finally:
            self.executor.close()
        results = summarise(self.cfg, self.passages, conditions, self.store)
        (self.store.dir / RESULTS_FILE).write_text(json.dumps(results, indent=2))
        write_records(self.store, self.passages, conditions)
        return results


def summarise(cfg: KnowledgeEvalConfig, passages: list[Passage], conditions: list[str], store: RunStore) -> dict:
    summary, per_passage = summarise_conditions(
        store.all("answers"), store.all("adapt"), passages, conditions, metrics_for(cfg.judge), cfg.reward
    )
    return {
        "schema": "seal.knowledge.eval/1",
        "model": cfg.model.name,
        "reward": cfg.reward,
        "n_passages": len(passages),
        "n_questions": sum(len(p.questions) for p in passages),
        "conditions": summary,
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
            before = answers[f"base/{passage_key}/0"]
            edit = self_edits.get(key, {}).get("text")
            for qi, q in enumerate(run):
                row = {"condition": condition, "passage": passage_key, "self_edit_index": int(index), "question_index": qi}
                row |= {"question": q["question"], "gold": q["gold"], "answer_before": before[qi]["answer"]}
                row |= {k: v for k, v in q.items() if k not in ("question", "gold")}
                if edit is not None and qi == 0:
                    row["self_edit"] = edit
                f.write(json.dumps(row) + "\n")
