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

import statistics
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from seal import policy
from seal.cluster import make_executor
from seal.config import KnowledgeTrainConfig
from seal.domains import knowledge
from seal.domains.knowledge import Passage
from seal.errors import DataError
from seal.experiments.knowledge_steps import (
    KnowledgeSteps,
    PlanItem,
    evaluation_table,
    paired_comparisons,
    record_key,
    select_passages,
    summarise_conditions,
    training_documents,
)
from seal.experiments.steps import Experiment, mean, open_run, stable_seed
from seal.grading import check_metric, metrics
from seal.status import record_evaluation
from seal.store import RunStore, key

BASELINES = ("in-context", "passage")
SELF_QUESTIONS = "self-questions"  # where reward_questions: self files the questions the initial policy wrote


def eval_phase(policy_round: int) -> str:
    """Where the held-out evaluation of policy `policy_round` is filed (`e{p}/{condition}/...`)."""
    return f"e{policy_round}"


def train_phase(r: int) -> str:
    """Where round r's training records are filed (`r{r}/train/{condition}/...`)."""
    return f"r{r}/train"


def repeat_key(phase: str, passage: Passage, index: int, repeat: int) -> str:
    """The answers of the `repeat`-th adaptation to a passage's `index`-th training self-edit."""
    return key(record_key(phase, passage, index), repeat)


def selection_key(r: int, passage: Passage) -> str:
    return f"r{r}/{passage.key}"


def training_passages(cfg: KnowledgeTrainConfig) -> list[list[Passage]]:
    """Each round's training passages: the same first `train_passages` every round, or (fresh) round r's own
    block of them, in file order (the release trains round 0 on 50 SQuAD-train passages, round 1 on the next 50)."""
    labelled = cfg.reward_questions == "gold"  # self: the passages' own questions are not used
    if cfg.round_passages == "same":
        return [select_passages(cfg.train_data, cfg.train_passages, False, labelled)] * cfg.rounds
    pool = select_passages(cfg.train_data, None, False, labelled)
    per_round = cfg.train_passages or len(pool) // cfg.rounds
    if per_round * cfg.rounds > len(pool) or per_round == 0:
        raise DataError(
            f"{cfg.train_data}: {len(pool)} passages; fresh passages every round need {cfg.rounds} x {per_round}"
        )
    return [pool[r * per_round : (r + 1) * per_round] for r in range(cfg.rounds)]


def eval_conditions(cfg: KnowledgeTrainConfig, policy_round: int) -> list[str]:
    """The held-out rows of a policy's evaluation: closed-book, its self-edits, and the baselines with policy 0."""
    return ["base", cfg.variant] + ([*cfg.baselines] if policy_round == 0 else [])


def self_edit_conditions(cfg: KnowledgeTrainConfig, policy_round: int) -> list[str]:
    """The self-edit prompts a policy is evaluated with: the run's, and the other variants among the baselines
    (with the initial policy only)."""
    return [cfg.variant] + ([b for b in cfg.baselines if b in knowledge.VARIANTS] if policy_round == 0 else [])


class KnowledgeTrain(Experiment):
    """`seal knowledge train`: ReST-EM rounds, each policy evaluated on held-out passages."""

    def __init__(self, cfg: KnowledgeTrainConfig, out: str | Path, console: Console | None = None):
        knowledge.check_variant(cfg.variant)
        known = (*BASELINES, *(v for v in knowledge.VARIANTS if v != cfg.variant))
        unknown = [b for b in cfg.baselines if b not in known]
        if unknown:
            raise ValueError(f"unknown baseline(s) {', '.join(unknown)}; choose from {', '.join(known)}")
        check_metric(cfg.reward, cfg.judge)
        self.cfg = cfg
        self.console = console or Console()
        self.round_passages = training_passages(cfg)
        self.eval_passages = select_passages(cfg.eval_data, cfg.eval_passages, cfg.paper_subset)
        trained = {(p.title, p.context) for passages in self.round_passages for p in passages}
        overlap = trained & {(p.title, p.context) for p in self.eval_passages}
        if overlap:
            title = sorted(overlap)[0][0]
            raise DataError(f"{len(overlap)} passage(s) are both training and held-out passages, e.g. {title!r}")
        self.store = open_run(out, cfg)
        self.policy = policy.PolicyOnDemand(cfg.model, self.store)
        self.executor = make_executor(cfg.executor, self.policy)
        self.steps = KnowledgeSteps.for_config(cfg, self.store, self.executor, self.console)

    def _plans(
        self, phase: str, passages: list[Passage], k: int, variant: str
    ) -> dict[str, tuple[Passage, knowledge.Plan]]:
        """Each sampled self-edit's plan, under its record key."""
        sampled = self.store.all("self_edits")
        out = {}
        for passage in passages:
            for i in range(k):
                text = sampled[record_key(phase, passage, i)]["text"]
                out[record_key(phase, passage, i)] = (
                    passage,
                    knowledge.plan(passage, text, variant, self.cfg.split_lines),
                )
        return out

    # --- evaluation of a policy ------------------------------------------------------------------

    def evaluate(self, policy_round: int) -> None:
        self.policy.use(policy_round)
        cfg, passages, phase = self.cfg, self.eval_passages, eval_phase(policy_round)
        with self.store.timed(phase):
            self.steps.answer(key(phase, "base"), passages)
            if policy_round == 0 and "in-context" in cfg.baselines:
                self.steps.answer(key(phase, "in-context"), passages, in_context=True)
            sampling = cfg.sampling.model_copy(update={"k": cfg.eval_k})
            items = []
            for variant in self_edit_conditions(cfg, policy_round):
                edits = key(phase, variant)
                self.steps.sample(edits, passages, variant, sampling)
                items += [
                    PlanItem(k if cfg.eval_times == 1 else key(k, t), [passage], training_documents(plan))
                    for k, (passage, plan) in self._plans(edits, passages, cfg.eval_k, variant).items()
                    for t in range(cfg.eval_times)
                ]
            if policy_round == 0 and "passage" in cfg.baselines:
                passage_only = key(phase, "passage")
                items += [
                    PlanItem(record_key(passage_only, passage), [passage], knowledge.plan(passage, "").documents)
                    for passage in passages
                ]
            self.steps.adapt(items, f"{phase}: adapting and scoring")

        def table() -> dict:
            answers, adapt = self.store.all("answers"), self.store.all("adapt")
            return evaluation_table(summarise_evaluation(cfg, passages, answers, adapt, policy_round)[0])

        record_evaluation(self.store, phase, table)

    # --- one round of training -------------------------------------------------------------------

    def rewards(self, r: int, plans: dict[str, tuple[Passage, knowledge.Plan]]) -> dict[str, dict[int, float | None]]:
        """Per training passage, each self-edit's reward (None for a self-edit that gave no plan)."""
        cfg, answers, phase = self.cfg, self.store.all("answers"), train_phase(r)
        edits = key(phase, cfg.variant)
        out: dict[str, dict[int, float | None]] = {}
        for passage in self.round_passages[r - 1]:
            before = mean([record[cfg.reward] for record in answers[record_key(key(phase, "base"), passage)]])
            out[passage.key] = {}
            for i in range(cfg.sampling.k):
                if plans[record_key(edits, passage, i)][1].self_edit_documents == 0:
                    out[passage.key][i] = None
                    continue
                runs = [answers[repeat_key(edits, passage, i, rep)] for rep in range(cfg.repeats)]
                out[passage.key][i] = mean([mean([record[cfg.reward] for record in run]) for run in runs]) - before
        return out

    def train_round(self, r: int) -> None:
        cfg, passages, phase = self.cfg, self.round_passages[r - 1], train_phase(r)
        self.policy.use(r - 1)
        edits = key(phase, cfg.variant)
        with self.store.timed(f"r{r}/sample-and-score"):
            self.steps.answer(key(phase, "base"), passages)
            self.steps.sample(edits, passages, cfg.variant, cfg.sampling)
            plans = self._plans(edits, passages, cfg.sampling.k, cfg.variant)
            items = [
                PlanItem(key(k, rep), [passage], training_documents(plan))
                for k, (passage, plan) in plans.items()
                if plan.self_edit_documents > 0  # an unusable self-edit is recorded with no reward, not trained on
                for rep in range(cfg.repeats)
            ]
            self.steps.adapt(items, f"round {r}: adapting and scoring")
        rewards = self.rewards(r, plans)
        if self.store.get("selections", selection_key(r, passages[0])) is None:
            self.store.put_many(
                "selections",
                [
                    (
                        selection_key(r, passage),
                        {"rewards": list(rs.values()), "kept": policy.select(rs, cfg.select, cfg.keep)},
                    )
                    for passage, rs in zip(passages, rewards.values())
                ],
            )
        if self.store.get("policy", policy.policy_key(r)) is None:
            with self.store.timed(f"r{r}/sft"):
                self.fine_tune(r)

    def fine_tune(self, r: int) -> None:
        sampled, selections = self.store.all("self_edits"), self.store.all("selections")
        edits = key(train_phase(r), self.cfg.variant)
        kept = [
            sampled[record_key(edits, passage, i)]
            for passage in self.round_passages[r - 1]
            for i in selections[selection_key(r, passage)]["kept"]
        ]
        # a probes self-edit's answers come from the in-context model: the policy learns its questions
        examples = [(edit["prompt"], edit.get("questions", edit["text"])) for edit in kept]
        self.policy.fine_tune(r, examples, self.cfg.policy, stable_seed(self.cfg.seed, "sft", r), self.executor)

    # --- the whole run ---------------------------------------------------------------------------

    def self_questioned(self) -> list[list[Passage]]:
        """Each round's training passages with, in place of their own questions, those the initial policy
        wrote about them with their references (`reward_questions: self`); a passage it kept none for is
        left out of training."""
        cfg = self.cfg
        self.policy.use(0)
        every = list({p.key: p for passages in self.round_passages for p in passages}.values())
        sampling = cfg.sampling.model_copy(update={"k": cfg.self_question_lists})
        found = self.steps.self_questions(SELF_QUESTIONS, every, sampling, cfg.self_answer_samples, cfg.self_agree)
        rounds = [
            [replace(p, questions=found[p.key]) for p in passages if found[p.key]] for passages in self.round_passages
        ]
        for r, passages in enumerate(rounds, 1):
            if not passages:
                raise DataError(
                    f"{cfg.train_data}: the initial model kept no question of its own about any training passage of "
                    f"round {r} (reward_questions: self); more question lists (self_question_lists) or fewer "
                    "agreeing samples (self_agree) may keep some"
                )
        return rounds

    def run(self) -> dict:
        """Every round not finished yet, then the results (also written to results.json)."""
        with self.store, self.executor:
            if self.cfg.reward_questions == "self":
                self.round_passages = self.self_questioned()
            policy.run_rounds(self.cfg.rounds, self.evaluate, self.train_round)
            return self.store.write_results(summarise(self.cfg, self.round_passages, self.eval_passages, self.store))


def summarise(
    cfg: KnowledgeTrainConfig, round_passages: list[list[Passage]], held_out: list[Passage], store: RunStore
) -> dict:
    answers, adapt, timing = store.all("answers"), store.all("adapt"), store.all("timing")
    selections, sampled, policies = store.all("selections"), store.all("self_edits"), store.all("policy")
    rounds = []
    table: dict[str, dict[str, dict[str, float]]] = {p.key: {} for p in held_out}  # passage -> row -> scores
    for policy_round in range(cfg.rounds + 1):
        phase = eval_phase(policy_round)
        conditions = eval_conditions(cfg, policy_round)
        evaluation, per_passage = summarise_evaluation(cfg, held_out, answers, adapt, policy_round)
        for condition in conditions:
            if policy_round == 0 or condition == cfg.variant:
                for passage_key, scores in per_passage.items():
                    table[passage_key][table_row(condition, policy_round, cfg.variant)] = scores[condition]
        row: dict = {"round": policy_round, "eval": evaluation, "eval_seconds": timing.get(phase)}
        eval_edits = [
            sampled[record_key(key(phase, cfg.variant), passage, i)]["text"]
            for passage in held_out
            for i in range(cfg.eval_k)
        ]
        row["eval_self_edit_words"] = mean([len(t.split()) for t in eval_edits])
        if cfg.eval_times > 1:
            row["eval_spread"] = repeat_spread(answers, key(phase, cfg.variant), held_out, cfg)
        if policy_round >= 1:
            train = round_passages[policy_round - 1]
            rewards = [x for passage in train for x in selections[selection_key(policy_round, passage)]["rewards"]]
            valid = [x for x in rewards if x is not None]
            edits = key(train_phase(policy_round), cfg.variant)
            texts = [sampled[record_key(edits, passage, i)]["text"] for passage in train for i in range(cfg.sampling.k)]
            sft = policies[policy.policy_key(policy_round)]
            row["train"] = {
                "rewards": rewards,
                "reward_mean": mean(valid),
                "reward_std": statistics.pstdev(valid) if valid else float("nan"),
                "fraction_gaining": mean([float(x > 0) for x in valid]),
                "invalid": len(rewards) - len(valid),
                "kept": sum(len(selections[selection_key(policy_round, passage)]["kept"]) for passage in train),
                "self_edit_words": [len(t.split()) for t in texts],
                "sft_examples": sft["examples"],
                "sft_loss_first_last": [sft["losses"][0], sft["losses"][-1]] if sft["losses"] else None,
                "seconds": sum(timing.get(f"r{policy_round}/{part}") or 0.0 for part in ("sample-and-score", "sft")),
            }
        rounds.append(row)
    return {
        "schema": "seal.knowledge.train/1",
        "model": cfg.model.name,
        "reward": cfg.reward,
        "variant": cfg.variant,
        "n_train_passages": len({p.key for passages in round_passages for p in passages}),
        "round_passages": cfg.round_passages,
        "n_eval_passages": len(held_out),
        "n_eval_questions": sum(len(p.questions) for p in held_out),
        "rounds": rounds,
        # every held-out condition as a row (the baselines with policy 0), compared pairwise over passages
        "paired": paired_comparisons(table, table_rows(cfg), metrics(cfg.judge)),
    }


def summarise_evaluation(
    cfg: KnowledgeTrainConfig, held_out: list[Passage], answers: dict, adapt: dict, policy_round: int
) -> tuple[dict[str, dict], dict[str, dict[str, dict[str, float]]]]:
    """`summarise_conditions` of the held-out evaluation of policy `policy_round`."""
    return summarise_conditions(
        answers, adapt, held_out, eval_conditions(cfg, policy_round), metrics(cfg.judge), cfg.reward,
        phase=eval_phase(policy_round) + "/",
    )  # fmt: skip


def repeat_spread(answers: dict, phase: str, passages: list[Passage], cfg: KnowledgeTrainConfig) -> float:
    """How much adapting to the same self-edit again (another seed) moves its score in the reward metric:
    the standard deviation over the `eval_times` repeats, averaged over self-edits."""
    spreads = []
    for passage in passages:
        for i in range(cfg.eval_k):
            runs = [answers[key(record_key(phase, passage, i), t)] for t in range(cfg.eval_times)]
            spreads.append(statistics.pstdev([mean([r[cfg.reward] for r in run]) for run in runs]))
    return mean(spreads)


def table_rows(cfg: KnowledgeTrainConfig) -> list[str]:
    """The held-out rows in the order of the paper's claim: closed-book, the baselines, then the self-edits
    of policy 0 (no RL) and of each ReST-EM round."""
    return ["base", *cfg.baselines, *(table_row(cfg.variant, r, cfg.variant) for r in range(cfg.rounds + 1))]


def table_row(condition: str, policy_round: int, variant: str) -> str:
    """The name of a held-out row: `base`, `passage`, ... (policy 0), `implications@1` (policy 1's self-edits)."""
    return f"{condition}@{policy_round}" if condition == variant else condition
