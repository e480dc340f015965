"""ReST-EM, the outer loop, written once for every domain.

Round r (1..R), starting from policy r-1:
  1. sample k self-edits per training context (`Domain.sample`);
  2. adapt to each and score the adapted model (`Domain.adapt_and_score`);
  3. reward each self-edit (`Domain.rewards`: one per inner-loop run of it, averaged; None for one that gave
     no plan, never kept);
  4. select per context by the config's rule (`seal.policy.select`: best or positive);
  5. fine-tune the policy on (prompt, kept self-edit) and merge: policy r.
Policy 0 and every later policy are evaluated on held-out contexts (`Domain.evaluate`), each
evaluation's table filed once (`seal.status.record_evaluation`).

A domain is one class implementing `Domain`: knowledge incorporation in
`seal.experiments.knowledge_train`, ARC in `seal.experiments.arc`. Every step is resumable: what
the store holds is not redone.

Store keys: round r's training self-edits under `{Domain.self_edits(r)}/{context}/{i}`; its
choice per context under `selections` `r{r}/{context}`; its policy under `policy` `r{r}` (adapter
in `policy/round-{r}`); timings `r{r}/sample-and-score`, `r{r}/sft` and `e{p}` (the evaluation
of policy p, whose records the domain files under `e{p}/...`).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Protocol

from seal.cluster import Executor
from seal.config import PolicyConfig
from seal.experiments.steps import mean, stable_seed
from seal.policy import PolicyOnDemand, policy_key, select
from seal.stats import reward_reliability, signal_to_noise
from seal.status import record_evaluation
from seal.store import RunStore, key


class Context(Protocol):
    """A training or held-out context (a passage, an ARC task): its key names its records."""

    @property
    def key(self) -> str: ...


class Settings(Protocol):
    """The fields of a ReST-EM command's config the loop reads (`KnowledgeTrainConfig`, `ArcTrainConfig`)."""

    rounds: int
    select: str
    keep: int
    seed: int
    policy: PolicyConfig


class Domain(Protocol):
    """What a ReST-EM run asks of its domain. The policy in use is set before each call."""

    def contexts(self, r: int) -> Sequence[Context]:
        """Round r's training contexts."""
        ...

    def self_edits(self, r: int) -> str:
        """The phase round r's training self-edits are filed under (as `{phase}/{context}/{i}`)."""
        ...

    def sample(self, r: int, contexts: Sequence[Context]) -> None:
        """k self-edits per context, filed under `self_edits(r)`."""
        ...

    def adapt_and_score(self, r: int, contexts: Sequence[Context]) -> None:
        """Adapt to each sampled self-edit and score the adapted model (and whatever its reward is measured
        against)."""
        ...

    def rewards(self, r: int, contexts: Sequence[Context]) -> dict[str, dict[int, list[float] | None]]:
        """Per context key, each self-edit's reward by its index, one per inner-loop run of it (repeats with other
        seeds); None: it gave no plan."""
        ...

    def evaluate(self, policy_round: int) -> None:
        """The held-out evaluation of the policy in use, filed under `eval_phase(policy_round)`."""
        ...

    def evaluation_table(self, policy_round: int) -> dict[str, dict[str, dict]]:
        """The table `seal.status.record_evaluation` files for that evaluation."""
        ...

    def evaluation_summary(self, policy_round: int) -> dict:
        """Its fields of the policy's row in results.json (`eval` and the domain's own)."""
        ...

    def training_summary(self, r: int, contexts: Sequence[Context]) -> dict:
        """The domain's own numbers on round r's training self-edits (the loop adds rewards, selection, SFT)."""
        ...


def eval_phase(policy_round: int) -> str:
    """Where the held-out evaluation of policy `policy_round` is filed (`e{p}/{condition}/...`) and timed."""
    return f"e{policy_round}"


def selection_key(r: int, context: Context) -> str:
    """Where round r's choice among a context's self-edits (their rewards, those kept) is recorded."""
    return f"r{r}/{context.key}"


class ReSTEM:
    """The rounds of one run: its domain, its config's ReST-EM settings, its store, its policy (a model source
    for the executor) and where model work runs."""

    def __init__(self, domain: Domain, cfg: Settings, store: RunStore, policy: PolicyOnDemand, executor: Executor):
        self.domain, self.cfg, self.store, self.policy, self.executor = domain, cfg, store, policy, executor

    def run(self) -> list[dict]:
        """Evaluate policy 0; then per round r, train policy r and evaluate it (each step only if not recorded);
        returns each policy's row of results.json."""
        for r in range(1, self.cfg.rounds + 1):
            self.evaluate(r - 1)
            self.train_round(r)
        self.evaluate(self.cfg.rounds)
        return self.summary()

    def evaluate(self, policy_round: int) -> None:
        self.policy.use(policy_round)
        phase = eval_phase(policy_round)
        with self.store.timed(phase):
            self.domain.evaluate(policy_round)
        record_evaluation(self.store, phase, lambda: self.domain.evaluation_table(policy_round))

    def train_round(self, r: int) -> None:
        domain, cfg, contexts = self.domain, self.cfg, self.domain.contexts(r)
        self.policy.use(r - 1)
        with self.store.timed(f"r{r}/sample-and-score"):
            domain.sample(r, contexts)
            domain.adapt_and_score(r, contexts)
        if self.store.get("selections", selection_key(r, contexts[0])) is None:
            rewards = domain.rewards(r, contexts)
            records = []
            for c in contexts:
                repeats = rewards[c.key]
                means = {i: None if runs is None else mean(runs) for i, runs in repeats.items()}
                record = {"rewards": list(means.values()), "repeats": list(repeats.values())}
                records.append((selection_key(r, c), record | {"kept": select(means, cfg.select, cfg.keep)}))
            self.store.put_many("selections", records)
        if self.store.get("policy", policy_key(r)) is None:
            with self.store.timed(f"r{r}/sft"):
                self.fine_tune(r, contexts)

    def fine_tune(self, r: int, contexts: Sequence[Context]) -> None:
        sampled, selections, edits = (
            self.store.all("self_edits"),
            self.store.all("selections"),
            self.domain.self_edits(r),
        )
        kept = [sampled[key(edits, c.key, i)] for c in contexts for i in selections[selection_key(r, c)]["kept"]]
        # what the policy wrote: a self-edit whose plan text was completed elsewhere (the in-context model's
        # answers to a probes self-edit's questions) records the policy's own part as `written`
        examples = [(edit["prompt"], edit.get("written", edit["text"])) for edit in kept]
        self.policy.fine_tune(r, examples, self.cfg.policy, stable_seed(self.cfg.seed, "sft", r), self.executor)

    def summary(self) -> list[dict]:
        """Per policy: its held-out evaluation, and (policy r >= 1) the round that produced it."""
        timing, rows = self.store.all("timing"), []
        for policy_round in range(self.cfg.rounds + 1):
            row = {"round": policy_round, **self.domain.evaluation_summary(policy_round)}
            row["eval_seconds"] = timing.get(eval_phase(policy_round))
            if policy_round >= 1:
                row["train"] = self.training_summary(policy_round)
            rows.append(row)
        return rows

    def training_summary(self, r: int) -> dict:
        """Round r's rewards, how many gained, were invalid and were kept, the self-edits' lengths, the policy's
        fine-tuning, and the domain's own numbers."""
        contexts, edits = self.domain.contexts(r), self.domain.self_edits(r)
        selections, sampled = self.store.all("selections"), self.store.all("self_edits")
        chosen = [selections[selection_key(r, c)] for c in contexts]
        rewards = [x for choice in chosen for x in choice["rewards"]]
        valid = [x for x in rewards if x is not None]
        texts = [sampled[key(edits, c.key, i)]["text"] for c, choice in zip(contexts, chosen) for i, _ in
                 enumerate(choice["rewards"])]  # fmt: skip
        sft = self.store.get("policy", policy_key(r))
        timing = self.store.all("timing")
        return (
            self.domain.training_summary(r, contexts)
            | reward_diagnostics([c["repeats"] for c in chosen])
            | {
                "rewards": rewards,
                "reward_mean": mean(valid),
                "reward_std": statistics.pstdev(valid) if valid else float("nan"),
                "fraction_gaining": mean([float(x > 0) for x in valid]),
                "invalid": len(rewards) - len(valid),
                "kept": sum(len(choice["kept"]) for choice in chosen),
                "self_edit_words": [len(t.split()) for t in texts],
                "sft_examples": sft["examples"],
                "sft_loss_first_last": [sft["losses"][0], sft["losses"][-1]] if sft["losses"] else None,
                "seconds": sum(timing.get(f"r{r}/{part}") or 0.0 for part in ("sample-and-score", "sft")),
            }
        )


def reward_diagnostics(repeats: list[list[list[float] | None]]) -> dict:
    """Whether a round's selection was signal: with two or more inner-loop runs of every usable self-edit, how
    well the first two runs agree (`seal.stats.reward_reliability`) and the spread between a context's
    self-edits against that between runs of one (`seal.stats.signal_to_noise`), over the usable self-edits of
    each context; empty with one run each."""
    usable = [[runs for runs in context if runs is not None] for context in repeats]
    usable = [context for context in usable if context]
    if not usable or min(len(runs) for context in usable for runs in context) < 2:
        return {}
    first = [[runs[0] for runs in context] for context in usable]
    second = [[runs[1] for runs in context] for context in usable]
    return {"reliability": reward_reliability(first, second), "signal_to_noise": signal_to_noise(usable)}
