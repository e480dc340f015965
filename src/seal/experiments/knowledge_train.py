"""ReST-EM for knowledge incorporation: teach the policy to write self-edits that get absorbed.

Round r (1..R), starting from policy r-1:
  1. answer the training passages' questions closed-book (the unadapted score);
  2. sample k self-edits per training passage;
  3. adapt and score each (`repeats` times with different seeds); reward = adapted score
     minus unadapted score, in the configured metric;
  4. select per passage (the best, even without gain, as the paper; or every one that gains);
  5. fine-tune the policy on (prompt, kept self-edit) and merge: policy r.
Policy 0 and every later policy are evaluated on held-out passages with the protocol of
`seal knowledge eval` (closed-book, and a self-edit adapted per passage); the baselines
(in-context, passage only) once, with policy 0.

Store keys: `r{r}/train/...` for a round's training records, `e{p}/...` for the evaluation
of policy p, `selections` and `policy` records per round. Policy adapters live in
`policy/round-{r}` (peft format, each relative to the previous policy).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from rich.console import Console

from seal import policy
from seal.cluster import make_executor
from seal.config import KnowledgeTrainConfig
from seal.domains import knowledge
from seal.domains.knowledge import DataError, Passage
from seal.experiments.knowledge_eval import check_reward, metrics_for, select_passages
from seal.experiments.knowledge_steps import (
    KnowledgeSteps,
    PlanItem,
    mean,
    stable_seed,
    summarise_conditions,
)
from seal.store import RunStore

RESULTS_FILE = "results.json"


class KnowledgeTrain:
    def __init__(self, cfg: KnowledgeTrainConfig, out: str | Path, console: Console | None = None):
        knowledge.check_variant(cfg.variant)
        unknown = [b for b in cfg.baselines if b not in ("in-context", "passage")]
        if unknown:
            raise ValueError(f"unknown baseline(s) {', '.join(unknown)}; choose from in-context, passage")
        check_reward(cfg.reward, cfg.judge)
        self.cfg = cfg
        self.console = console or Console()
        self.train_passages = select_passages(cfg.train_data, cfg.train_passages, paper_subset=False)
        self.eval_passages = select_passages(cfg.eval_data, cfg.eval_passages, cfg.paper_subset)
        overlap = {(p.title, p.context) for p in self.train_passages} & {(p.title, p.context) for p in self.eval_passages}
        if overlap:
            title = sorted(overlap)[0][0]
            raise DataError(f"{len(overlap)} passage(s) are both training and held-out passages, e.g. {title!r}")
        self.store = RunStore(out, cfg)
        self.policy = policy.PolicyOnDemand(cfg.model, self.store)
        self.executor = make_executor(cfg.executor, self.policy)
        self.steps = KnowledgeSteps.for_config(cfg, self.store, self.executor, self.console)

    def _plans(self, prefix: str, passages: list[Passage], k: int) -> dict[str, knowledge.Plan]:
        sampled = self.store.all("self_edits")
        return {
            f"{p.key}/{i}": knowledge.plan(p, sampled[f"{prefix}/{p.key}/{i}"]["text"], self.cfg.variant, self.cfg.split_lines)
            for p in passages
            for i in range(k)
        }

    # --- evaluation of a policy ------------------------------------------------------------------

    def evaluate(self, p: int) -> None:
        self.policy.wanted = p
        cfg, passages = self.cfg, self.eval_passages
        with self.store.timed(f"e{p}"):
            self.steps.answer(f"e{p}/base", passages)
            if p == 0 and "in-context" in cfg.baselines:
                self.steps.answer("e0/in-context", passages, in_context=True)
            sampling = cfg.sampling.model_copy(update={"k": cfg.eval_k})
            self.steps.sample(f"e{p}/{cfg.variant}", passages, cfg.variant, sampling)
            plans = self._plans(f"e{p}/{cfg.variant}", passages, cfg.eval_k)
            by_key = {q.key: q for q in passages}
            items = [PlanItem(f"e{p}/{cfg.variant}/{k}", [by_key[k.split("/")[0]]], plan.documents) for k, plan in plans.items()]
            if p == 0 and "passage" in cfg.baselines:
                items += [PlanItem(f"e0/passage/{q.key}/0", [q], knowledge.plan(q, "").documents) for q in passages]
            self.steps.adapt(items, f"e{p}: adapting and scoring")

    # --- one round of training -------------------------------------------------------------------

    def rewards(self, r: int, plans: dict[str, knowledge.Plan]) -> dict[str, dict[int, float | None]]:
        """Per training passage, each self-edit's reward (None for a self-edit that gave no plan)."""
        cfg, answers = self.cfg, self.store.all("answers")
        out: dict[str, dict[int, float | None]] = {}
        for p in self.train_passages:
            before = mean([q[cfg.reward] for q in answers[f"r{r}/train/base/{p.key}/0"]])
            out[p.key] = {}
            for i in range(cfg.sampling.k):
                if plans[f"{p.key}/{i}"].self_edit_documents == 0:
                    out[p.key][i] = None
                    continue
                runs = [answers[f"r{r}/train/{cfg.variant}/{p.key}/{i}/{rep}"] for rep in range(cfg.repeats)]
                out[p.key][i] = mean([mean([q[cfg.reward] for q in run]) for run in runs]) - before
        return out

    def train_round(self, r: int) -> None:
        cfg, passages = self.cfg, self.train_passages
        self.policy.wanted = r - 1
        prefix = f"r{r}/train"
        with self.store.timed(f"r{r}/sample-and-score"):
            self.steps.answer(f"{prefix}/base", passages)
            self.steps.sample(f"{prefix}/{cfg.variant}", passages, cfg.variant, cfg.sampling)
            plans = self._plans(f"{prefix}/{cfg.variant}", passages, cfg.sampling.k)
            by_key = {q.key: q for q in passages}
            items = [
                PlanItem(f"{prefix}/{cfg.variant}/{k}/{rep}", [by_key[k.split("/")[0]]], plan.documents)
                for k, plan in plans.items()
                if plan.self_edit_documents > 0  # an unusable self-edit is recorded with no reward, not trained on
                for rep in range(cfg.repeats)
            ]
            self.steps.adapt(items, f"round {r}: adapting and scoring")
        rewards = self.rewards(r, plans)
        if self.store.get("selections", f"r{r}/{passages[0].key}") is None:
            self.store.put_many(
                "selections",
                [(f"r{r}/{key}", {"rewards": list(rs.values()), "kept": policy.select(rs, cfg.select)}) for key, rs in rewards.items()],
            )
        if self.store.get("policy", f"r{r}") is None:
            with self.store.timed(f"r{r}/sft"):
                self.fine_tune(r)

    def fine_tune(self, r: int) -> None:
        sampled, selections = self.store.all("self_edits"), self.store.all("selections")
        examples = [
            (sampled[key]["prompt"], sampled[key]["text"])
            for p in self.train_passages
            for i in selections[f"r{r}/{p.key}"]["kept"]
            for key in [f"r{r}/train/{self.cfg.variant}/{p.key}/{i}"]
        ]
        self.policy.fine_tune(r, examples, self.cfg.policy, stable_seed(self.cfg.seed, "sft", r), self.executor)

    # --- the whole run ---------------------------------------------------------------------------

    def run(self) -> dict:
        policy.run_rounds(self.cfg.rounds, self.evaluate, self.train_round, self.executor)
        results = summarise(self.cfg, self.train_passages, self.eval_passages, self.store)
        (self.store.dir / RESULTS_FILE).write_text(json.dumps(results, indent=2))
        return results


def summarise(cfg: KnowledgeTrainConfig, train: list[Passage], held_out: list[Passage], store: RunStore) -> dict:
    answers, adapt, timing = store.all("answers"), store.all("adapt"), store.all("timing")
    selections, sampled, policies = store.all("selections"), store.all("self_edits"), store.all("policy")
    metrics = metrics_for(cfg.judge)
    rounds = []
    for p in range(cfg.rounds + 1):
        conditions = ["base", cfg.variant] + ([*cfg.baselines] if p == 0 else [])
        evaluation, _ = summarise_conditions(answers, adapt, held_out, conditions, metrics, cfg.reward, prefix=f"e{p}/")
        row: dict = {"round": p, "eval": evaluation, "eval_seconds": timing.get(f"e{p}")}
        eval_edits = [sampled[f"e{p}/{cfg.variant}/{q.key}/{i}"]["text"] for q in held_out for i in range(cfg.eval_k)]
        row["eval_self_edit_words"] = mean([len(t.split()) for t in eval_edits])
        if p >= 1:
            rewards = [x for q in train for x in selections[f"r{p}/{q.key}"]["rewards"]]
            valid = [x for x in rewards if x is not None]
            edits = [sampled[f"r{p}/train/{cfg.variant}/{q.key}/{i}"]["text"] for q in train for i in range(cfg.sampling.k)]
            sft = policies[f"r{p}"]
            row["train"] = {
                "rewards": rewards,
                "reward_mean": mean(valid),
                "reward_std": statistics.pstdev(valid) if valid else float("nan"),
                "fraction_gaining": mean([float(x > 0) for x in valid]),
                "invalid": len(rewards) - len(valid),
                "kept": sum(len(selections[f"r{p}/{q.key}"]["kept"]) for q in train),
                "self_edit_words": [len(t.split()) for t in edits],
                "sft_examples": sft["examples"],
                "sft_loss_first_last": [sft["losses"][0], sft["losses"][-1]] if sft["losses"] else None,
                "seconds": (timing.get(f"r{p}/sample-and-score") or 0.0) + (timing.get(f"r{p}/sft") or 0.0),
            }
        rounds.append(row)
    return {
        "schema": "seal.knowledge.train/1",
        "model": cfg.model.name,
        "reward": cfg.reward,
        "variant": cfg.variant,
        "n_train_passages": len(train),
        "n_eval_passages": len(held_out),
        "n_eval_questions": sum(len(p.questions) for p in held_out),
        "rounds": rounds,
    }
