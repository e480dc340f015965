"""ReST-EM for knowledge incorporation: teach the policy to write self-edits that get absorbed.

`KnowledgeTrain` is the knowledge domain of the outer loop (`seal.experiments.rest_em`). A round's training passages
are first answered closed-book (the unadapted score); each self-edit is adapted to and scored `repeats`
times with different seeds; its reward is the adapted score minus the unadapted score, in the configured
metric. Policy 0 and every later policy are evaluated on held-out passages with the protocol of
`seal knowledge eval` (closed-book, and a self-edit adapted per passage); the baselines (in-context,
passage only) once, with policy 0.

Store keys: `r{r}/train/...` for a round's training records (`r{r}/train/base/...` the unadapted answers,
`r{r}/train/{variant}/...` the self-edits and their answers), `e{p}/...` for the evaluation of policy p.
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
from seal.experiments.rest_em import ReSTEM, eval_phase
from seal.experiments.steps import Experiment, mean, open_run
from seal.grading import check_metric, metrics
from seal.store import RunStore, key

BASELINES = ("in-context", "passage")
SELF_QUESTIONS = "self-questions"  # where reward_questions: self files the questions the initial policy wrote


def train_phase(r: int) -> str:
    """Where round r's training records are filed (`r{r}/train/{condition}/...`)."""
    return f"r{r}/train"


def repeat_key(phase: str, passage: Passage, index: int, repeat: int) -> str:
    """The answers of the `repeat`-th adaptation to a passage's `index`-th training self-edit."""
    return key(record_key(phase, passage, index), repeat)


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
    """The held-out rows of a policy's evaluation: closed-book, its self-edits, and the baselines with policy 0
    (with `drift`, in context with every policy)."""
    if policy_round == 0:
        return ["base", cfg.variant, *cfg.baselines]
    return ["base", cfg.variant] + (["in-context"] if reads_in_context(cfg, policy_round) else [])


def reads_in_context(cfg: KnowledgeTrainConfig, policy_round: int) -> bool:
    """Whether the policy answers the held-out passages in context: the baseline, or (`drift`) its reading."""
    return "in-context" in cfg.baselines if policy_round == 0 else cfg.drift


def self_edit_conditions(cfg: KnowledgeTrainConfig, policy_round: int) -> list[str]:
    """The self-edit prompts a policy is evaluated with: the run's, and the other variants among the baselines
    (with the initial policy only)."""
    return [cfg.variant] + ([b for b in cfg.baselines if b in knowledge.VARIANTS] if policy_round == 0 else [])


class KnowledgeTrain(Experiment):
    """`seal knowledge train`: ReST-EM rounds, each policy evaluated on held-out passages; the knowledge
    domain of `seal.experiments.rest_em.ReSTEM`."""

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

    # --- the domain of the outer loop (seal.experiments.rest_em.Domain) ------------------------------------------

    def contexts(self, r: int) -> list[Passage]:
        return self.round_passages[r - 1]

    def self_edits(self, r: int) -> str:
        return key(train_phase(r), self.cfg.variant)

    def sample(self, r: int, passages: list[Passage]) -> None:
        self.steps.sample(self.self_edits(r), passages, self.cfg.variant, self.cfg.sampling)

    def adapt_and_score(self, r: int, passages: list[Passage]) -> None:
        """The closed-book answers the rewards are measured against, then each usable self-edit adapted to
        `repeats` times (an unusable one is recorded with no reward, not trained on)."""
        cfg = self.cfg
        self.steps.answer(key(train_phase(r), "base"), passages)
        plans = self._plans(self.self_edits(r), passages, cfg.sampling.k, cfg.variant)
        items = [
            PlanItem(key(k, rep), [passage], training_documents(plan))
            for k, (passage, plan) in plans.items()
            if plan.self_edit_documents > 0
            for rep in range(cfg.repeats)
        ]
        self.steps.adapt(items, f"round {r}: adapting and scoring")

    def rewards(self, r: int, passages: list[Passage]) -> dict[str, dict[int, list[float] | None]]:
        """Each self-edit's adapted score minus the unadapted score in the reward metric, one per repeat."""
        cfg, answers, edits = self.cfg, self.store.all("answers"), self.self_edits(r)
        plans = self._plans(edits, passages, cfg.sampling.k, cfg.variant)
        out: dict[str, dict[int, list[float] | None]] = {}
        for passage in passages:
            base = answers[record_key(key(train_phase(r), "base"), passage)]
            before = mean([record[cfg.reward] for record in base])
            out[passage.key] = {}
            for i in range(cfg.sampling.k):
                if plans[record_key(edits, passage, i)][1].self_edit_documents == 0:
                    out[passage.key][i] = None
                    continue
                runs = [answers[repeat_key(edits, passage, i, rep)] for rep in range(cfg.repeats)]
                out[passage.key][i] = [mean([record[cfg.reward] for record in run]) - before for run in runs]
        return out

    def evaluate(self, policy_round: int) -> None:
        cfg, passages, phase = self.cfg, self.eval_passages, eval_phase(policy_round)
        self.steps.answer(key(phase, "base"), passages)
        if reads_in_context(cfg, policy_round):
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

    def _evaluation(self, policy_round: int) -> tuple[dict[str, dict], dict[str, dict[str, dict[str, float]]]]:
        answers, adapt = self.store.all("answers"), self.store.all("adapt")
        return summarise_evaluation(self.cfg, self.eval_passages, answers, adapt, policy_round)

    def evaluation_table(self, policy_round: int) -> dict[str, dict[str, dict]]:
        return evaluation_table(self._evaluation(policy_round)[0])

    def evaluation_summary(self, policy_round: int) -> dict:
        """The conditions' scores, the held-out self-edits' mean length and (`eval_times` > 1) how much adapting
        to the same self-edit again moves its score."""
        cfg, phase, sampled = self.cfg, eval_phase(policy_round), self.store.all("self_edits")
        edits = key(phase, cfg.variant)
        texts = [sampled[record_key(edits, p, i)]["text"] for p in self.eval_passages for i in range(cfg.eval_k)]
        row = {"eval": self._evaluation(policy_round)[0], "eval_self_edit_words": mean([len(t.split()) for t in texts])}
        if cfg.eval_times > 1:
            row["eval_spread"] = repeat_spread(self.store.all("answers"), edits, self.eval_passages, cfg)
        return row

    def training_summary(self, r: int, passages: list[Passage]) -> dict:
        """What the round's self-edits restate of their passage: the share of its questions' answers that a
        self-edit states word for word, and its lines."""
        sampled, edits = self.store.all("self_edits"), self.self_edits(r)
        restated, lines = [], []
        for passage in passages:
            answers = [q.answer.lower() for q in passage.questions]
            for i in range(self.cfg.sampling.k):
                text = sampled[record_key(edits, passage, i)]["text"]
                restated.append(mean([float(a in text.lower()) for a in answers]))
                lines.append(len([line for line in text.splitlines() if line.strip()]))
        return {"answers_restated": mean(restated), "self_edit_lines": mean(lines)}

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
            rounds = ReSTEM(self, self.cfg, self.store, self.policy, self.executor).run()
            return self.store.write_results(
                summarise(self.cfg, self.round_passages, self.eval_passages, self.store, rounds)
            )


def summarise(
    cfg: KnowledgeTrainConfig,
    round_passages: list[list[Passage]],
    held_out: list[Passage],
    store: RunStore,
    rounds: list[dict],
) -> dict:
    """results.json: the rounds' rows (`seal.experiments.rest_em.ReSTEM.summary`), and every held-out condition as a
    row (the baselines with policy 0) compared pairwise over passages."""
    answers, adapt = store.all("answers"), store.all("adapt")
    table: dict[str, dict[str, dict[str, float]]] = {p.key: {} for p in held_out}  # passage -> row -> scores
    for policy_round in range(cfg.rounds + 1):
        _, per_passage = summarise_evaluation(cfg, held_out, answers, adapt, policy_round)
        for condition in eval_conditions(cfg, policy_round):
            if policy_round == 0 or condition == cfg.variant:
                for passage_key, scores in per_passage.items():
                    table[passage_key][table_row(condition, policy_round, cfg.variant)] = scores[condition]
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
