"""Multi-passage (continued pretraining) setting: absorb n passages at once.

Per condition, one training run over the documents of all n passages' plans (the passage
itself, plus its self-edit's lines for a self-edit condition), then every question of the
n passages closed-book. With `method: lora` the conditions train together as slots of the
adapter bank; with `method: full` each is a full fine-tune from the same initial weights.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from seal.cluster import LocalExecutor
from seal.config import KnowledgeCPTConfig
from seal.domains import knowledge
from seal.domains.knowledge import Passage
from seal.engine.plain import train_full
from seal.engine.training import Document
from seal.experiments.knowledge_steps import (
    KnowledgeSteps,
    PlanItem,
    check_conditions,
    file_self_edits,
    paired_comparisons,
    probes_for,
    record_key,
    select_passages,
    training_documents,
)
from seal.experiments.qa import score_probes
from seal.experiments.steps import Experiment, mean, open_run, stable_seed
from seal.grading import check_metric, metrics
from seal.models import ModelOnDemand
from seal.stats import bootstrap_ci
from seal.status import record_evaluation
from seal.store import RunStore, key

KNOWN = ("base", "passage", "file", *knowledge.VARIANTS)
TRAINED = "cpt"  # the phase of each trained condition's answers: `cpt/{condition}`, one record for all passages


class KnowledgeCPT(Experiment):
    def __init__(self, cfg: KnowledgeCPTConfig, out: str | Path, console: Console | None = None):
        check_conditions(cfg.conditions, KNOWN)
        check_metric(cfg.reward, cfg.judge)
        self.cfg = cfg
        self.console = console or Console()
        self.passages = select_passages(cfg.data, cfg.passages, cfg.paper_subset)
        self.from_file = file_self_edits(cfg, self.passages)
        self.store = open_run(out, cfg)
        self.model = ModelOnDemand(cfg.model)
        self.steps = KnowledgeSteps.for_config(cfg, self.store, LocalExecutor(self.model), self.console)

    def documents(self, condition: str) -> list[Document]:
        sampled = self.store.all("self_edits")
        docs = []
        for p in self.passages:
            if condition == "passage":
                texts = [""]
            elif condition == "file":
                texts = self.from_file[p.key]
            else:
                texts = [sampled[record_key(condition, p, i)]["text"] for i in range(self.cfg.sampling.k)]
            variant = condition if condition in knowledge.VARIANTS else "implications"
            for text in texts:
                docs += training_documents(knowledge.plan(p, text, variant, self.cfg.split_lines))
        if self.cfg.repeat_passage:  # the release: the passage after every self-edit's lines
            return docs
        return list(dict.fromkeys(docs))  # the passage itself once, however many self-edits it has

    def full_fine_tune(self, condition: str) -> None:
        done = key(TRAINED, condition)
        if self.store.get("answers", done) is not None:
            return
        lm = self.model()
        initial = {k: v.detach().clone() for k, v in lm.model.state_dict().items()}
        began = time.perf_counter()
        try:
            losses = train_full(lm, self.documents(condition), stable_seed(self.cfg.seed, done), self.cfg.adapt)
            probes = [q for p in self.passages for q in probes_for(lm, p)]
            records = score_probes(lm, probes, self.cfg.answer, self.cfg.judge)
        finally:
            lm.model.load_state_dict(initial)
        self.store.put("adapt", done, {"loss_first": losses[0], "loss_last": losses[-1], "steps": len(losses),
                                       "seconds": time.perf_counter() - began})  # fmt: skip
        self.store.put("answers", done, records)

    def run(self) -> dict:
        """Answer, sample, train and score what is not in the store yet; write and return the results."""
        with self.store:
            results = self._run()
            record_evaluation(self.store, "cpt", lambda: {c: row["ci"] for c, row in results["conditions"].items()})
            return self.store.write_results(results)

    def _run(self) -> dict:
        cfg = self.cfg
        if "base" in cfg.conditions:
            self.steps.answer("base", self.passages)
        for condition in cfg.conditions:
            if condition in knowledge.VARIANTS:
                self.steps.sample(condition, self.passages, condition, cfg.sampling)
        trained = [c for c in cfg.conditions if c != "base"]
        if cfg.method == "lora":
            items = [PlanItem(key(TRAINED, c), self.passages, self.documents(c)) for c in trained]
            self.steps.adapt(items, f"training on {len(self.passages)} passages at once")
        else:
            for condition in trained:
                self.full_fine_tune(condition)
        return summarise(cfg, self.passages, self.store)


def summarise(cfg: KnowledgeCPTConfig, passages: list[Passage], store: RunStore) -> dict:
    answers, adapt = store.all("answers"), store.all("adapt")
    recorded = metrics(cfg.judge)
    conditions, scores = {}, {p.key: {} for p in passages}
    for condition in cfg.conditions:
        if condition == "base":
            records = [q for p in passages for q in answers[record_key("base", p)]]
        else:
            records = answers[key(TRAINED, condition)]
        per_passage, offset = [], 0
        for p in passages:
            per_passage.append(records[offset : offset + len(p.questions)])
            offset += len(p.questions)
        trained = adapt.get(key(TRAINED, condition))
        for p, qs in zip(passages, per_passage):
            scores[p.key][condition] = {m: mean([q[m] for q in qs]) for m in recorded}
        passage_means = {m: [scores[p.key][condition][m] for p in passages] for m in recorded}
        conditions[condition] = {
            "macro": {m: mean(passage_means[m]) for m in recorded},
            "micro": {m: mean([q[m] for q in records]) for m in recorded},
            "ci": {m: bootstrap_ci(passage_means[m]) for m in recorded},
            "training": trained,
        }
    return {
        "schema": "seal.knowledge.cpt/1",
        "model": cfg.model.name,
        "method": cfg.method,
        "reward": cfg.reward,
        "n_passages": len(passages),
        "n_questions": sum(len(p.questions) for p in passages),
        "conditions": conditions,
        "paired": paired_comparisons(scores, list(cfg.conditions), recorded),
    }
