"""Multi-passage (continued pretraining) setting: absorb n passages at once.

Per condition, one training run over the documents of all n passages' plans (the passage
itself, plus its self-edit's lines for a self-edit condition), then every question of the
n passages closed-book. With `method: lora` the conditions train together as slots of the
adapter bank; with `method: full` each is a full fine-tune from the same initial weights.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console

from seal.baseline import train_full
from seal.cluster import LocalExecutor
from seal.config import KnowledgeCPTConfig
from seal.domains import knowledge
from seal.domains.knowledge import Passage
from seal.experiments.knowledge_eval import (
    check_reward,
    file_self_edits,
    metrics_for,
    select_passages,
)
from seal.experiments.knowledge_steps import (
    KnowledgeSteps,
    PlanItem,
    mean,
    probes_for,
    stable_seed,
)
from seal.loop import score_probes
from seal.models import ModelOnDemand
from seal.store import RunStore

RESULTS_FILE = "results.json"
KNOWN = ("base", "passage", "file", *knowledge.VARIANTS)


class KnowledgeCPT:
    def __init__(self, cfg: KnowledgeCPTConfig, out: str | Path, console: Console | None = None):
        unknown = [c for c in cfg.conditions if c not in KNOWN]
        if unknown:
            raise ValueError(f"unknown condition(s) {', '.join(unknown)}; choose from {', '.join(KNOWN)}")
        check_reward(cfg.reward, cfg.judge)
        self.cfg = cfg
        self.console = console or Console()
        self.passages = select_passages(cfg.data, cfg.passages, cfg.paper_subset)
        self.from_file = file_self_edits(cfg, self.passages) if "file" in cfg.conditions else {}
        self.store = RunStore(out, cfg)
        self.model = ModelOnDemand(cfg.model)
        self.steps = KnowledgeSteps.for_config(cfg, self.store, LocalExecutor(self.model), self.console)

    def documents(self, condition: str) -> list[str]:
        sampled = self.store.all("self_edits")
        docs = []
        for p in self.passages:
            if condition == "passage":
                texts = [""]
            elif condition == "file":
                texts = self.from_file[p.key]
            else:
                texts = [sampled[f"{condition}/{p.key}/{i}"]["text"] for i in range(self.cfg.sampling.k)]
            variant = condition if condition in knowledge.VARIANTS else "implications"
            for text in texts:
                docs += knowledge.plan(p, text, variant, self.cfg.split_lines).documents
        return list(dict.fromkeys(docs))  # the passage itself once, however many self-edits it has

    def full_fine_tune(self, condition: str) -> None:
        key = f"cpt/{condition}"
        if self.store.get("answers", key) is not None:
            return
        lm = self.model()
        initial = {k: v.detach().clone() for k, v in lm.model.state_dict().items()}
        began = time.perf_counter()
        try:
            losses = train_full(lm, self.documents(condition), stable_seed(self.cfg.seed, key), self.cfg.adapt)
            probes = [q for p in self.passages for q in probes_for(lm, p)]
            records = score_probes(lm, probes, self.cfg.answer, judge=self.steps.judge)
        finally:
            lm.model.load_state_dict(initial)
        self.store.put("adapt", key, {"loss_first": losses[0], "loss_last": losses[-1], "steps": len(losses),
                                      "seconds": time.perf_counter() - began})  # fmt: skip
        self.store.put("answers", key, records)

    def run(self) -> dict:
        cfg = self.cfg
        if "base" in cfg.conditions:
            self.steps.answer("base", self.passages)
        for condition in cfg.conditions:
            if condition in knowledge.VARIANTS:
                self.steps.sample(condition, self.passages, condition, cfg.sampling)
        trained = [c for c in cfg.conditions if c != "base"]
        if cfg.method == "lora":
            items = [PlanItem(f"cpt/{c}", self.passages, self.documents(c)) for c in trained]
            self.steps.adapt(items, f"training on {len(self.passages)} passages at once")
        else:
            for condition in trained:
                self.full_fine_tune(condition)
        results = summarise(cfg, self.passages, self.store)
        (self.store.dir / RESULTS_FILE).write_text(json.dumps(results, indent=2))
        return results


def summarise(cfg: KnowledgeCPTConfig, passages: list[Passage], store: RunStore) -> dict:
    answers, adapt = store.all("answers"), store.all("adapt")
    metrics = metrics_for(cfg.judge)
    conditions = {}
    for condition in cfg.conditions:
        if condition == "base":
            records = [q for p in passages for q in answers[f"base/{p.key}/0"]]
        else:
            records = answers[f"cpt/{condition}"]
        per_passage, offset = [], 0
        for p in passages:
            per_passage.append(records[offset : offset + len(p.questions)])
            offset += len(p.questions)
        trained = adapt.get(f"cpt/{condition}")
        conditions[condition] = {
            "macro": {m: mean([mean([q[m] for q in qs]) for qs in per_passage]) for m in metrics},
            "micro": {m: mean([q[m] for q in records]) for m in metrics},
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
    }
