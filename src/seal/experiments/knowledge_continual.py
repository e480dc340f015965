"""Continual self-edits: does absorbing passage t erase passages 1..t-1?

For each sequence of T passages and each mitigation arm, starting from the same initial
weights: train an adapter on passage t's plan, merge it into the model, then answer the
questions of passages 1..t closed-book. Row t of the forgetting matrix holds those scores.

Self-edits are written once, by the initial model, before any update, so every arm trains
on the very same self-edits and differs only by its mitigation:
- none: the plan of passage t alone (the paper's setting);
- replay: the plan plus `replay_documents` documents drawn from the plans of passages < t.

Each step's adapter is saved (peft format) before it is merged, and merged from the saved
file, so a resumed run rebuilds the model of step t exactly without training it again.
"""

from __future__ import annotations

import logging
import random
import statistics
from pathlib import Path

import torch
from rich.console import Console

from seal import policy
from seal.cluster import LocalExecutor
from seal.config import KnowledgeContinualConfig
from seal.domains import knowledge
from seal.domains.knowledge import Passage
from seal.engine.adapters import AdapterBank
from seal.engine.training import TrainJob, train_adapters
from seal.experiments.knowledge_steps import KnowledgeSteps, record_key, select_passages
from seal.experiments.steps import Experiment, mean, open_run, stable_seed
from seal.grading import check_metric
from seal.models import ModelOnDemand
from seal.stats import bootstrap_ci
from seal.store import RunStore, key

SELF_EDITS = "self-edits"  # the phase of the self-edits, written once by the initial model
BEFORE = "before"  # the phase of the initial model's answers


def step_phase(sequence: int, arm: str, t: int) -> str:
    """Where the answers after step t of a sequence under a mitigation arm are filed; also the step's record."""
    return f"s{sequence}/{arm}/t{t}"


class KnowledgeContinual(Experiment):
    def __init__(self, cfg: KnowledgeContinualConfig, out: str | Path, console: Console | None = None):
        knowledge.check_variant(cfg.variant)
        check_metric(cfg.metric, cfg.judge, "metric")
        self.cfg = cfg
        self.console = console or Console()
        pool = select_passages(cfg.data, cfg.sequences * cfg.steps, cfg.paper_subset)
        if len(pool) < cfg.sequences * cfg.steps:
            raise ValueError(f"{cfg.data} has {len(pool)} passages; {cfg.sequences} x {cfg.steps} are needed")
        self.sequences = [pool[s * cfg.steps : (s + 1) * cfg.steps] for s in range(cfg.sequences)]
        self.store = open_run(out, cfg)
        self.model = ModelOnDemand(cfg.model)
        self.steps = KnowledgeSteps.for_config(cfg, self.store, LocalExecutor(self.model), self.console)
        self._initial: dict[str, torch.Tensor] | None = None
        self.sampling = cfg.sampling.model_copy(update={"k": 1})  # one self-edit per passage

    def _restore_initial(self) -> None:
        """Back to the weights the run started from (only the adapted layers ever change)."""
        lm = self.model()
        AdapterBank.detach_from(lm.model)
        targets = {
            name: module.weight
            for name, module in lm.model.named_modules()
            if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in self.cfg.adapt.lora.targets
        }
        if self._initial is None:
            self._initial = {name: w.detach().clone() for name, w in targets.items()}
        with torch.no_grad():
            for name, w in targets.items():
                w.copy_(self._initial[name])

    def self_edit_phase(self, s: int, arm: str, t: int) -> str:
        """Where step t's self-edit is filed: written once by the initial model for every arm, or (current)
        by this arm's model as merged after step t-1."""
        return SELF_EDITS if self.cfg.self_edits_by == "initial" else key(step_phase(s, arm, t), "self-edit")

    def plan_documents(self, s: int, arm: str, upto: int) -> list[list[str]]:
        """The documents of the plans of steps 0..upto of a sequence under an arm."""
        sampled = self.store.all("self_edits")
        return [
            knowledge.plan(
                p,
                sampled[record_key(self.self_edit_phase(s, arm, t), p)]["text"],
                self.cfg.variant,
                self.cfg.split_lines,
            ).documents
            for t, p in enumerate(self.sequences[s][: upto + 1])
        ]

    def documents(self, s: int, arm: str, t: int) -> list[str]:
        plans = self.plan_documents(s, arm, t)
        if arm == "none" or t == 0:
            return plans[t]
        earlier = [d for plan in plans[:t] for d in plan]
        rng = random.Random(stable_seed(self.cfg.seed, "replay", s, t))
        return plans[t] + rng.sample(earlier, min(self.cfg.replay_documents, len(earlier)))

    def run_arm(self, s: int, arm: str) -> None:
        passages = self.sequences[s]
        if all(self.store.get("answers", record_key(step_phase(s, arm, t), passages[t])) for t in range(len(passages))):
            return
        self._restore_initial()
        lm = self.model()
        for t in range(len(passages)):
            step_key = step_phase(s, arm, t)
            record = self.store.get("steps", step_key)
            damage = record is not None and self.store.damage(record["adapter"])
            if damage:
                logging.getLogger(__name__).warning("%s: this step is trained again from its saved plan", damage)
            if record is None or damage:
                if self.cfg.self_edits_by == "current":  # the model as merged so far writes this step's self-edit
                    self.steps.sample(self.self_edit_phase(s, arm, t), [passages[t]], self.cfg.variant, self.sampling)
                bank = AdapterBank.attach(lm.model, self.cfg.adapt.lora, 1)
                # Both arms start passage t from the same adapter initialisation and document-order seed.
                stats = train_adapters(
                    lm, bank, [TrainJob(self.documents(s, arm, t), stable_seed(self.cfg.seed, s, t))], self.cfg.adapt
                )
                adapter = f"continual/s{s}/{arm}/step-{t}"
                with self.store.checked_directory(adapter) as partial:
                    bank.save(0, partial, base_model=lm.name)
                record = {"adapter": adapter, "losses": stats.first_last(0),
                          "documents": len(self.documents(s, arm, t))}  # fmt: skip
                self.store.put("steps", step_key, record)
            policy.apply_adapter(lm, self.store.dir / record["adapter"])
            self.steps.answer(step_key, passages[: t + 1])

    def run(self) -> dict:
        """Every sequence under every arm, then the forgetting matrices (also written to results.json)."""
        everything = [p for seq in self.sequences for p in seq]
        with self.store:
            if self.cfg.self_edits_by == "initial":
                self.steps.sample(SELF_EDITS, everything, self.cfg.variant, self.sampling)
            self.steps.answer(BEFORE, everything)
            for s in range(self.cfg.sequences):
                for arm in self.cfg.mitigations:
                    self.run_arm(s, arm)
            return self.store.write_results(summarise(self.cfg, self.sequences, self.store))


def summarise(cfg: KnowledgeContinualConfig, sequences: list[list[Passage]], store: RunStore) -> dict:
    """matrix[t][j] = score on passage j after step t (j <= t; None above the diagonal), mean over sequences."""
    answers, metric, T = store.all("answers"), cfg.metric, cfg.steps

    def score(key: str) -> float:
        return mean([q[metric] for q in answers[key]])

    arms = {}
    for arm in cfg.mitigations:
        per_sequence = [
            [[score(record_key(step_phase(s, arm, t), seq[j])) if j <= t else None for j in range(T)] for t in range(T)]
            for s, seq in enumerate(sequences)
        ]
        matrix = [[None if j > t else mean([m[t][j] for m in per_sequence]) for j in range(T)] for t in range(T)]
        # the release's std_over_sequences: how much a cell varies from one sequence to another
        spread = [
            [None if j > t else statistics.pstdev([m[t][j] for m in per_sequence]) for j in range(T)] for t in range(T)
        ]
        # Forgetting of passage j: its score right after it was learned minus its score at the end.
        forgetting = [matrix[j][j] - matrix[T - 1][j] for j in range(T - 1)]
        per_sequence_forgetting = [mean([m[j][j] - m[T - 1][j] for j in range(T - 1)]) for m in per_sequence]
        arms[arm] = {
            "matrix": matrix,
            "matrix_std": spread,
            "per_sequence": per_sequence,
            "forgetting_ci": bootstrap_ci(per_sequence_forgetting) if T > 1 else None,  # over sequences
            "just_learned": mean([matrix[t][t] for t in range(T)]),
            "final_mean": mean(matrix[T - 1]),
            "forgetting": mean(forgetting) if forgetting else 0.0,
        }
    before = [[score(record_key(BEFORE, p)) for p in seq] for seq in sequences]
    return {
        "schema": "seal.knowledge.continual/1",
        "model": cfg.model.name,
        "metric": metric,
        "steps": T,
        "sequences": [[p.key for p in seq] for seq in sequences],
        "self_edits_by": cfg.self_edits_by,
        "before": [mean([b[j] for b in before]) for j in range(T)],
        "before_mean": statistics.fmean(x for b in before for x in b),
        "arms": arms,
    }
