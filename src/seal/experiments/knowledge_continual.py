"""Continual self-edits: does absorbing passage t erase passages 1..t-1?

For each sequence of T passages and each mitigation arm, starting from the same initial
weights: train an adapter on passage t's plan, merge it into the model, then answer the
questions of passages 1..t closed-book. Row t of the forgetting matrix holds those scores.

Self-edits are written once, by the initial model, before any update, so every arm trains
on the very same self-edits and differs only by its mitigation:
- none: the plan of passage t alone (the paper's setting);
- replay: the plan plus `replay_documents` documents drawn from the plans of passages < t;
- gate: the plan of passage t alone, merged whole, scaled down or not at all, by the drop it causes in
  the gold-answer log-likelihood of a probe set of earlier passages' questions (`gate`);
- library: the plan of passage t alone, trained from the initial weights and kept, never merged; each
  question is answered by the adapter(s) a router chooses among those learned so far (`library`).

Each step's adapter is saved (peft format) before it is merged, and merged from the saved
file, so a resumed run rebuilds the model of step t exactly without training it again.

Retention (every metric the records hold; verdict and loglik at least): after step t, the score of
the passages learned before t relative to their score right after each was learned, as a ratio of
their means (a per-passage ratio is undefined where a passage scored 0 right after it was learned);
for loglik, which is negative, the ratio of the gains over the unadapted model. Wall times (training,
answering) and adapter sizes go to `costs.json`, beside results.json, which a resumed run reproduces.
"""

from __future__ import annotations

import json
import logging
import random
import statistics
import time
from pathlib import Path

import torch
from rich.console import Console

from seal import policy
from seal.cluster import LocalExecutor
from seal.config import KnowledgeContinualConfig
from seal.domains import knowledge
from seal.domains.knowledge import Passage
from seal.engine import routing
from seal.engine.adapters import ADAPTER_WEIGHTS, AdapterBank, SavedAdapter
from seal.engine.sampling import continuation_logprobs
from seal.engine.scoring import regroup
from seal.engine.training import Document, TrainJob, train_adapters
from seal.experiments.knowledge_steps import (
    KnowledgeSteps,
    probes_for,
    record_key,
    select_passages,
    training_documents,
)
from seal.experiments.qa import score_probes
from seal.experiments.steps import Experiment, mean, open_run, stable_seed
from seal.grading import check_metric
from seal.models import ModelOnDemand
from seal.stats import bootstrap_ci
from seal.store import RunStore, key

SELF_EDITS = "self-edits"  # the phase of the self-edits, written once by the initial model
BEFORE = "before"  # the phase of the initial model's answers
GATE, LIBRARY = "gate", "library"
RETENTION_METRICS = ["verdict", "loglik"]  # every record holds both; results hold both matrices
COSTS_FILE = "costs.json"


def step_phase(sequence: int, arm: str, t: int) -> str:
    """Where the answers after step t of a sequence under a mitigation arm are filed; also the step's record."""
    return f"s{sequence}/{arm}/t{t}"


def gate_scale(drops: dict[float, float], max_drop: float) -> float:
    """The largest scale of an update whose drop on the probe set is at most `max_drop`; 0 (rejected) if none."""
    return max((scale for scale, drop in drops.items() if drop <= max_drop), default=0.0)


class Mitigation:
    """An arm of the experiment, each step's choices in one place: what step t trains on, what its record adds,
    how its adapter enters the model, how questions are answered, and what the arm adds to the results. This
    one, `none`, is the paper's setting: the plan of passage t alone, merged whole."""

    name = "none"

    def documents(self, run: KnowledgeContinual, s: int, t: int, plans: list[list[Document]]) -> list[Document]:
        """What step t trains on, from the plans of steps 0..t."""
        return plans[t]

    def step_record(self, run: KnowledgeContinual, s: int, t: int, directory: Path) -> dict:
        """What step t's record holds beyond its training, once its adapter is saved in `directory`."""
        return {}

    def merge(self, run: KnowledgeContinual, lm, record: dict) -> None:
        """Step t's adapter into the model as it stands."""
        policy.apply_adapter(lm, run.store.dir / record["adapter"])

    def prepare_answers(self, run: KnowledgeContinual, s: int, t: int) -> None:
        """Measurements before step t's answers, left out of their time."""

    def answer(self, run: KnowledgeContinual, s: int, t: int) -> None:
        """The answers after step t to the questions of passages 0..t."""
        run.steps.answer(step_phase(s, self.name, t), run.sequences[s][: t + 1])

    def adapters_kept(self, cfg: KnowledgeContinualConfig) -> int:
        """How many adapters are kept to answer after the last step (the arms that merge keep none)."""
        return 0

    def summary(self, cfg: KnowledgeContinualConfig, store: RunStore, sequences: int) -> dict:
        """The arm's own fields of results.json."""
        return {}


class Replay(Mitigation):
    """The plan of passage t plus `replay_documents` documents drawn from the plans of passages < t."""

    name = "replay"

    def documents(self, run: KnowledgeContinual, s: int, t: int, plans: list[list[Document]]) -> list[Document]:
        if t == 0:
            return plans[t]
        earlier = [d for plan in plans[:t] for d in plan]
        rng = random.Random(stable_seed(run.cfg.seed, "replay", s, t))
        return plans[t] + rng.sample(earlier, min(run.cfg.replay_documents, len(earlier)))


class Gate(Mitigation):
    """The plan of passage t alone, merged whole, scaled down or not at all (`KnowledgeContinual.gate`)."""

    name = GATE

    def step_record(self, run: KnowledgeContinual, s: int, t: int, directory: Path) -> dict:
        return {"gate": run.gate(s, t, directory)}

    def merge(self, run: KnowledgeContinual, lm, record: dict) -> None:
        scale = record["gate"]["scale"]
        if scale > 0:  # a rejected update is dropped
            policy.apply_adapter(lm, run.store.dir / record["adapter"], scale)

    def summary(self, cfg: KnowledgeContinualConfig, store: RunStore, sequences: int) -> dict:
        steps = store.all("steps")
        return {"gate": [[steps[step_phase(s, GATE, t)]["gate"] for t in range(cfg.steps)] for s in range(sequences)]}


class Library(Mitigation):
    """The plan of passage t alone, trained from the initial weights and kept apart, never merged; each question
    answered by the adapter(s) a router chooses among those learned so far."""

    name = LIBRARY

    def merge(self, run: KnowledgeContinual, lm, record: dict) -> None:
        """Kept apart: the model stays as it started."""

    def prepare_answers(self, run: KnowledgeContinual, s: int, t: int) -> None:
        run.record_routing(s, t)

    def answer(self, run: KnowledgeContinual, s: int, t: int) -> None:
        run.answer_from_library(s, t)

    def adapters_kept(self, cfg: KnowledgeContinualConfig) -> int:
        return cfg.steps

    def summary(self, cfg: KnowledgeContinualConfig, store: RunStore, sequences: int) -> dict:
        return {"routing": routing_summary(cfg, store, cfg.steps)}


MITIGATIONS = {arm.name: arm for arm in (Mitigation(), Replay(), Gate(), Library())}


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

    def plan_documents(self, s: int, arm: str, upto: int) -> list[list[Document]]:
        """The documents of the plans of steps 0..upto of a sequence under an arm."""
        sampled = self.store.all("self_edits")
        return [
            training_documents(
                knowledge.plan(
                    p,
                    sampled[record_key(self.self_edit_phase(s, arm, t), p)]["text"],
                    self.cfg.variant,
                    self.cfg.split_lines,
                )
            )
            for t, p in enumerate(self.sequences[s][: upto + 1])
        ]

    def train_step(self, s: int, arm: str, t: int) -> dict:
        """Train step t's adapter on the model as it stands, save it, and record it (with the gate's decision
        under `gate`)."""
        lm = self.model()
        began = time.perf_counter()
        if self.cfg.self_edits_by == "current":  # the model as merged so far writes this step's self-edit
            self.steps.sample(self.self_edit_phase(s, arm, t), [self.sequences[s][t]], self.cfg.variant, self.sampling)
        mitigation = MITIGATIONS[arm]
        documents = mitigation.documents(self, s, t, self.plan_documents(s, arm, t))
        bank = AdapterBank.attach(lm.model, self.cfg.adapt.lora, 1)
        # Every arm starts passage t from the same adapter initialisation and document-order seed.
        stats = train_adapters(lm, bank, [TrainJob(documents, stable_seed(self.cfg.seed, s, t))], self.cfg.adapt)
        adapter = f"continual/s{s}/{arm}/step-{t}"
        directory = self.store.dir / adapter
        with self.store.checked_directory(adapter) as partial:
            bank.save(0, partial, base_model=lm.name)
        record = {"adapter": adapter, "losses": stats.first_last(0), "documents": len(documents)}
        record |= mitigation.step_record(self, s, t, directory)
        record["seconds"] = time.perf_counter() - began
        self.store.put("steps", step_phase(s, arm, t), record)
        return record

    def gate(self, s: int, t: int, directory: Path) -> dict:
        """The merge decision for step t's adapter: the mean gold-answer log-likelihood per token of a probe
        set of earlier passages' questions under the model as it stands, and with the update added whole
        or scaled down (all in one batched pass, each scale in its own slot); the largest scale whose drop
        is at most `gate.max_drop` is merged, or none."""
        if t == 0:  # nothing learned before: nothing to protect
            return {"decision": "accept", "scale": 1.0, "drops": {}, "probes": 0}
        lm = self.model()
        probes = [q for p in self.sequences[s][:t] for q in probes_for(lm, p)]
        n = min(self.cfg.gate.probe_questions, len(probes))
        probes = random.Random(stable_seed(self.cfg.seed, GATE, s, t)).sample(probes, n)
        scales = [1.0, *self.cfg.gate.scales]
        adapter = SavedAdapter.read(directory)
        bank = AdapterBank.attach(lm.model, self.cfg.adapt.lora, len(scales) + 1)
        bank.load(0, [])  # slot 0: no update, the model as it stands
        for slot, scale in enumerate(scales, start=1):
            bank.load(slot, [(adapter, scale)])
        scored = continuation_logprobs(
            lm,
            [p.prompt for p in probes] * (len(scales) + 1),
            [p.continuation for p in probes] * (len(scales) + 1),
            batch_size=self.cfg.answer.batch_size,
            bank=bank,
            slots=[slot for slot in range(len(scales) + 1) for _ in probes],
        )
        groups = regroup(scored, [n] * (len(scales) + 1))
        loglik = [mean([lp / max(tokens, 1) for lp, tokens in group]) for group in groups]
        drops = {scale: loglik[0] - loglik[slot] for slot, scale in enumerate(scales, start=1)}
        scale = gate_scale(drops, self.cfg.gate.max_drop)
        decision = "accept" if scale == 1.0 else "scale" if scale > 0 else "reject"
        return {"decision": decision, "scale": scale, "drops": {str(k): v for k, v in drops.items()},
                "probe_loglik": loglik[0], "probes": n}  # fmt: skip

    def answer_step(self, s: int, arm: str, t: int) -> None:
        """The answers after step t to the questions of passages 0..t, timed when there is work to do (the
        library's measured routers are not part of answering, and are left out of the time)."""
        phase, passages = step_phase(s, arm, t), self.sequences[s][: t + 1]
        if all(self.store.get("answers", record_key(phase, p)) for p in passages):
            return
        MITIGATIONS[arm].prepare_answers(self, s, t)
        began = time.perf_counter()
        MITIGATIONS[arm].answer(self, s, t)
        questions = sum(len(p.questions) for p in passages)
        self.store.put("costs", key(phase, "answer"), {"seconds": time.perf_counter() - began, "questions": questions})

    def library_similarities(self, s: int, t: int, embedder: str) -> torch.Tensor:
        """(questions of passages 0..t, adapters 0..t): each question's similarity to each adapter's keys (its
        passage, or its plan's documents) under an embedder."""
        passages = self.sequences[s][: t + 1]
        if self.cfg.library.keys == "plan":
            keys = self.plan_documents(s, LIBRARY, t)
        else:
            keys = [[f"{p.title}\n{p.context}"] for p in passages]
        questions = [q.question for p in passages for q in p.questions]
        return routing.similarities(routing.embedder(embedder, self.model()), questions, keys)

    def record_routing(self, s: int, t: int) -> None:
        """Every measured router's top-1 adapter for each question after step t, per passage (routing accuracy)."""
        cfg, sizes = self.cfg.library, [len(p.questions) for p in self.sequences[s][: t + 1]]
        chosen = {name: regroup(self.library_similarities(s, t, name).argmax(1).tolist(), sizes)
                  for name in dict.fromkeys([cfg.embedder, *cfg.measure])}  # fmt: skip
        self.store.put("routing", step_phase(s, LIBRARY, t), chosen)

    def answer_from_library(self, s: int, t: int) -> None:
        """Each question of passages 0..t answered by the adapter(s) the configured router chooses among the
        adapters of steps 0..t (a bank slot per distinct choice, every row through its own slot)."""
        cfg, lm, phase = self.cfg.library, self.model(), step_phase(s, LIBRARY, t)
        passages = self.sequences[s][: t + 1]
        routes = routing.choose(self.library_similarities(s, t, cfg.embedder), cfg.top_k, cfg.temperature)
        steps = self.store.all("steps")
        adapters = {j: SavedAdapter.read(self.store.dir / steps[step_phase(s, LIBRARY, j)]["adapter"])
                    for j in sorted({j for r in routes for j in r.entries})}  # fmt: skip
        probes = [q for p in passages for q in probes_for(lm, p)]
        records: list[dict] = [{}] * len(probes)
        for rows, bank, slots in routing.routed_banks(lm, routes, adapters, cfg.slots):
            asked = [probes[i] for i in rows]
            for i, record in zip(
                rows, score_probes(lm, asked, self.cfg.answer, self.cfg.judge, bank=bank, slots=slots)
            ):
                records[i] = record | {"route": list(routes[i].entries), "route_weights": list(routes[i].weights)}
        sizes = [len(p.questions) for p in passages]
        self.store.put_many("answers", [(record_key(phase, p), r) for p, r in zip(passages, regroup(records, sizes))])

    def run_arm(self, s: int, arm: str) -> None:
        passages = self.sequences[s]
        if all(self.store.get("answers", record_key(step_phase(s, arm, t), passages[t])) for t in range(len(passages))):
            return
        self._restore_initial()
        lm = self.model()
        for t in range(len(passages)):
            record = self.store.get("steps", step_phase(s, arm, t))
            damage = record is not None and self.store.damage(record["adapter"])
            if damage:
                logging.getLogger(__name__).warning("%s: this step is trained again from its saved plan", damage)
            if record is None or damage:
                record = self.train_step(s, arm, t)
            MITIGATIONS[arm].merge(self, lm, record)
            self.answer_step(s, arm, t)

    def run(self) -> dict:
        """Every sequence under every arm, then the forgetting matrices (also written to results.json) and
        the arms' costs (costs.json)."""
        everything = [p for seq in self.sequences for p in seq]
        with self.store:
            if self.cfg.self_edits_by == "initial":
                self.steps.sample(SELF_EDITS, everything, self.cfg.variant, self.sampling)
            self.steps.answer(BEFORE, everything)
            for s in range(self.cfg.sequences):
                for arm in self.cfg.mitigations:
                    self.run_arm(s, arm)
            (self.store.dir / COSTS_FILE).write_text(json.dumps(costs(self.cfg, self.store), indent=2))
            return self.store.write_results(summarise(self.cfg, self.sequences, self.store))


def costs(cfg: KnowledgeContinualConfig, store: RunStore) -> dict:
    """Per arm: training seconds per step (with the gate's measurement), answering seconds per question, the
    bytes of one saved adapter, and how many adapters are kept to answer after the last step."""
    steps, timed = store.all("steps"), store.all("costs")
    out = {}
    for arm in cfg.mitigations:
        records = [r for k, r in steps.items() if k.split("/")[1] == arm]
        answers = [c for k, c in timed.items() if k.split("/")[1] == arm]
        sizes = [(store.dir / r["adapter"] / ADAPTER_WEIGHTS).stat().st_size for r in records]
        out[arm] = {
            "train_seconds_per_step": mean([r["seconds"] for r in records if "seconds" in r]),
            "answer_seconds_per_question": sum(c["seconds"] for c in answers)
            / max(1, sum(c["questions"] for c in answers)),
            "adapter_bytes": mean(sizes),
            "adapters_kept": MITIGATIONS[arm].adapters_kept(cfg),
        }
    return {"schema": "seal.knowledge.continual.costs/1", "arms": out}


def retention(matrix: list[list[float | None]], before: list[float], t: int, gain: bool) -> float | None:
    """After step t, the mean score of passages 0..t-1 over their mean score right after each was learned
    (on the gain over the unadapted model when `gain`); None where nothing was learned (t = 0, or no gain)."""
    base = before if gain else [0.0] * len(before)
    learned = sum(matrix[j][j] - base[j] for j in range(t))
    if t == 0 or learned <= 0:
        return None
    return sum(matrix[t][j] - base[j] for j in range(t)) / learned


def metric_summary(per_sequence: list[list[list]], before: list[list[float]], metric: str, T: int) -> dict:
    """One metric's forgetting matrix (mean and spread over sequences), forgetting and retention with 95%
    intervals over sequences."""
    matrix = [[None if j > t else mean([m[t][j] for m in per_sequence]) for j in range(T)] for t in range(T)]
    # the release's std_over_sequences: how much a cell varies from one sequence to another
    spread = [
        [None if j > t else statistics.pstdev([m[t][j] for m in per_sequence]) for j in range(T)] for t in range(T)
    ]
    # Forgetting of passage j: its score right after it was learned minus its score at the end.
    forgetting = [matrix[j][j] - matrix[T - 1][j] for j in range(T - 1)]
    per_sequence_forgetting = [mean([m[j][j] - m[T - 1][j] for j in range(T - 1)]) for m in per_sequence]
    gain = metric == "loglik"
    by_step = [
        bootstrap_ci([retention(m, b, t, gain) for m, b in zip(per_sequence, before)]) if t else None for t in range(T)
    ]
    return {
        "matrix": matrix,
        "matrix_std": spread,
        "per_sequence": per_sequence,
        "forgetting_ci": bootstrap_ci(per_sequence_forgetting) if T > 1 else None,  # over sequences
        "just_learned": mean([matrix[t][t] for t in range(T)]),
        "final_mean": mean(matrix[T - 1]),
        "forgetting": mean(forgetting) if forgetting else 0.0,
        "retention": by_step[T - 1],  # after the last step
        "retention_by_step": by_step,
    }


def routing_summary(cfg: KnowledgeContinualConfig, store: RunStore, T: int) -> dict:
    """Per measured router: the share of questions whose top-1 adapter is their own passage's, after each
    step and over all steps, with the routing errors counted."""
    records = store.all("routing")
    out = {}
    for name in dict.fromkeys([cfg.library.embedder, *cfg.library.measure]):
        hits, totals = [0] * T, [0] * T
        for s in range(cfg.sequences):
            for t in range(T):
                chosen = records[step_phase(s, LIBRARY, t)][name]
                hits[t] += sum(c == j for j, row in enumerate(chosen) for c in row)
                totals[t] += sum(len(row) for row in chosen)
        out[name] = {
            "accuracy": sum(hits) / max(1, sum(totals)),
            "errors": sum(totals) - sum(hits),
            "questions": sum(totals),
            "accuracy_by_step": [h / max(1, n) for h, n in zip(hits, totals)],
        }
    return {"answered_by": cfg.library.embedder, "top_k": cfg.library.top_k, "keys": cfg.library.keys,
            "routers": out}  # fmt: skip


def summarise(cfg: KnowledgeContinualConfig, sequences: list[list[Passage]], store: RunStore) -> dict:
    """matrix[t][j] = score on passage j after step t (j <= t; None above the diagonal), mean over sequences,
    in `cfg.metric` (the arm's top-level fields) and in every metric of `metrics`."""
    answers, T = store.all("answers"), cfg.steps
    metrics = list(dict.fromkeys([cfg.metric, *RETENTION_METRICS]))

    def score(key: str, metric: str) -> float:
        return mean([q[metric] for q in answers[key]])

    before = {m: [[score(record_key(BEFORE, p), m) for p in seq] for seq in sequences] for m in metrics}
    arms = {}
    for arm in cfg.mitigations:
        blocks = {
            m: metric_summary(
                [[[score(record_key(step_phase(s, arm, t), seq[j]), m) if j <= t else None for j in range(T)]
                  for t in range(T)] for s, seq in enumerate(sequences)],
                before[m], m, T,
            )
            for m in metrics
        }  # fmt: skip
        arms[arm] = {**blocks[cfg.metric], "metrics": blocks} | MITIGATIONS[arm].summary(cfg, store, len(sequences))
    return {
        "schema": "seal.knowledge.continual/1",
        "model": cfg.model.name,
        "metric": cfg.metric,
        "steps": T,
        "sequences": [[p.key for p in seq] for seq in sequences],
        "self_edits_by": cfg.self_edits_by,
        "before": [mean([b[j] for b in before[cfg.metric]]) for j in range(T)],
        "before_mean": statistics.fmean(x for b in before[cfg.metric] for x in b),
        "metrics": {
            m: {
                "before": [mean([b[j] for b in before[m]]) for j in range(T)],
                "before_mean": statistics.fmean(x for b in before[m] for x in b),
                "retention": "gain over the unadapted model" if m == "loglik" else "ratio of scores",
            }
            for m in metrics
        },  # fmt: skip
        "arms": arms,
    }
