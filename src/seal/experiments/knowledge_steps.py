"""The steps every knowledge-incorporation experiment is made of, each resumable from a run store.

A step files its records under a phase prefix (a condition name for `seal knowledge eval`,
`r1/train/implications` or `e1/base` for a ReST-EM run), so one store holds a whole run and
a re-run does only the keys that are missing:

- answer: closed-book (or in-context) answers of the current model, no adaptation;
- sample: k self-edits per passage, in fixed batches seeded by their index;
- adapt: one fresh adapter per plan, trained and scored K at a time.

Record keys: `{phase}/{passage}/{i}` for the i-th self-edit of a passage and for the answers
of the model adapted to it (`/0` for unadapted answers); `summarise_conditions` reads them.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch
from rich.console import Console

from seal.cluster import Executor
from seal.config import AdaptConfig, AnswerConfig, JudgeConfig, ModelConfig, SamplingConfig
from seal.domains import knowledge
from seal.domains.knowledge import Passage, Question
from seal.engine.distill import Distilled
from seal.engine.loop import AdaptJob, adapt_batch, work_batches
from seal.engine.sampling import generate
from seal.engine.scoring import regroup
from seal.engine.training import Document
from seal.errors import DataError
from seal.experiments.qa import Probe, QuestionScorer, references, score_probes, unanswered
from seal.experiments.steps import (
    TrainingProgress,
    mean,
    progress_bar,
    resolve_slots,
    sample_self_edits,
    stable_seed,
    training_tokens,
)
from seal.models import LoadedModel
from seal.stats import bootstrap_ci, paired_conditions
from seal.status import begin_phase
from seal.store import RunStore, key

ANSWER_CHUNK = 16  # passages answered per unit of work (and per transaction)


def record_key(phase: str, passage: Passage, index: int = 0) -> str:
    """Where the `index`-th self-edit of `passage` in `phase`, and the answers adapted to it, are filed
    (index 0 also for the unadapted answers of a phase)."""
    return key(phase, passage.key, index)


def select_passages(data: str, n: int | None, paper_subset: bool, need_questions: bool = True) -> list[Passage]:
    """The first n passages of the file (in the paper's subset order), each with questions to score (unless
    `need_questions` is false)."""
    passages = knowledge.load_passages(data)
    if paper_subset:
        chosen = knowledge.paper_subset(passages, n)
    else:
        chosen = passages if n is None else passages[:n]
    empty = [p for p in chosen if not p.questions]
    if empty and need_questions:
        raise DataError(
            f"{data}: {len(empty)} of the chosen passages have no questions to score, "
            f"e.g. record {empty[0].source_index} ({empty[0].title!r})"
        )
    return chosen


def check_conditions(conditions: list[str], known: tuple[str, ...]) -> None:
    unknown = [c for c in conditions if c not in known]
    if unknown:
        raise ValueError(f"unknown condition(s) {', '.join(unknown)}; choose from {', '.join(known)}")


def file_self_edits(cfg, passages: list[Passage]) -> dict[str, list[str]]:
    """Self-edits for the 'file' condition, when a config (eval or CPT) has it: the first `sampling.k`
    `completions` of each passage in `self_edits_file` (else in the passages' own file), matched to the
    evaluated passages by their text."""
    if "file" not in cfg.conditions:
        return {}
    self_edits_file, data, k = cfg.self_edits_file, cfg.data, cfg.sampling.k
    source = knowledge.load_passages(self_edits_file) if self_edits_file else passages
    by_text = {(p.title, p.context): p.completions for p in source if p.completions is not None}
    out, missing = {}, []
    for p in passages:
        completions = by_text.get((p.title, p.context))
        if completions is None:
            missing.append(p.title)
        else:
            out[p.key] = completions[:k]
    if missing:
        raise DataError(
            f"{self_edits_file or data}: no completions for {len(missing)} evaluated passage(s), e.g. {missing[0]!r}"
        )
    return out


def probes_for(lm: LoadedModel, passage: Passage, in_context: bool = False) -> list[Probe]:
    """The passage's questions as probes for `lm` (closed-book, or with the passage in the prompt)."""
    return [
        Probe(
            question=q.question,
            gold=q.answer,
            prompt=knowledge.answer_prompt(lm, passage, q, in_context),
            continuation=knowledge.gold_continuation(lm, q),
        )
        for q in passage.questions
    ]


def training_documents(plan: knowledge.Plan) -> list[Document]:
    """A plan's documents for the engine: each self-edit document with the passage a teacher reads before
    it (distilled under `adapt.objective: distill`, plain text under sft), then the passage document."""
    split = plan.self_edit_documents
    return [Distilled(d, plan.teacher_context) for d in plan.documents[:split]] + plan.documents[split:]


@dataclass
class PlanItem:
    """One adaptation to run: train on `documents`, answer the questions of `passages`, file under `key`."""

    key: str
    passages: list[Passage]
    documents: list[Document]


class KnowledgeSteps:
    """The answer, sample and adapt steps over one run store and executor (the model is loaded on
    first need: a finished run loads nothing)."""

    def __init__(
        self,
        store: RunStore,
        executor: Executor,
        *,
        adapt: AdaptConfig,
        answer: AnswerConfig,
        judge: JudgeConfig | None,
        seed: int,
        console: Console,
        model: ModelConfig,
    ):
        self.store, self.executor = store, executor
        self.adapt_cfg, self.answer_cfg, self.judge = adapt, answer, judge
        self.seed, self.console, self.model_cfg = seed, console, model

    @classmethod
    def for_config(cls, cfg, store: RunStore, executor: Executor, console: Console) -> KnowledgeSteps:
        """From any knowledge command's config (its adapt, answer, judge and seed fields)."""
        return cls(
            store, executor, adapt=cfg.adapt, answer=cfg.answer, judge=cfg.judge, seed=cfg.seed, console=console,
            model=cfg.model,
        )  # fmt: skip

    def answer(self, phase: str, passages: list[Passage], in_context: bool = False) -> None:
        """The current model's answers filed as `{phase}/{passage}/0`, one transaction per chunk of passages."""
        todo = [p for p in passages if self.store.get("answers", record_key(phase, p)) is None]
        if not todo:
            return
        lm = self.executor.tokenizer_view()
        chunks = [todo[s : s + ANSWER_CHUNK] for s in range(0, len(todo), ANSWER_CHUNK)]
        items = [[(p, probes_for(lm, p, in_context)) for p in chunk] for chunk in chunks]
        label = f"{phase}: answering"
        begin_phase(self.store, label, "answer", "answers", [record_key(phase, p) for p in passages])
        with progress_bar(self.console) as progress:
            task = progress.add_task(label, total=len(todo))
            for item, records in self.executor.map(answer_work, items, self.answer_cfg, self.judge):
                self.store.put_many("answers", [(record_key(phase, p), r) for (p, _), r in zip(item, records)])
                progress.advance(task, len(item))

    def sample(self, phase: str, passages: list[Passage], variant: str, sampling: SamplingConfig) -> None:
        """`sampling.k` self-edits per passage, written with the `variant` prompt, filed as `{phase}/{passage}/{i}`."""
        if variant == knowledge.PROBES:
            self.sample_probes(phase, passages, sampling)
            return
        chat = self.executor.tokenizer_view().chat
        wanted = [
            (key(p.key, i), knowledge.self_edit_prompt(p, variant, chat)) for p in passages for i in range(sampling.k)
        ]
        sample_self_edits(self.store, self.executor, phase, wanted, sampling, self.seed, self.console)

    def question_lists(self, asked: str, passages: list[Passage], sampling: SamplingConfig) -> dict[str, dict]:
        """`sampling.k` lists of questions per passage written by the policy with the passage in its prompt
        (the probes prompt), filed as self-edits `{asked}/{passage}/{i}`; returns every self-edit record."""
        chat = self.executor.tokenizer_view().chat
        wanted = [
            (key(p.key, i), knowledge.self_edit_prompt(p, knowledge.PROBES, chat))
            for p in passages
            for i in range(sampling.k)
        ]
        sample_self_edits(self.store, self.executor, asked, wanted, sampling, self.seed, self.console)
        return self.store.all("self_edits")

    def sample_probes(self, phase: str, passages: list[Passage], sampling: SamplingConfig) -> None:
        """The probes variant, in two stages: `question_lists` (under `{phase}/questions`), then each question
        answered greedily by the model with the passage in its prompt, as the in-context condition answers;
        the pairs are the self-edit `{phase}/{passage}/{i}`, with the question prompt and the questions as
        written (what ReST-EM teaches the policy to write)."""
        asked = key(phase, "questions")
        written = self.question_lists(asked, passages, sampling)
        lists = [
            (record_key(phase, p, i), p, written[key(asked, p.key, i)]) for p in passages for i in range(sampling.k)
        ]
        todo = [(k, p, edit) for k, p, edit in lists if k not in written]
        if not todo:
            return
        chunks = [todo[s : s + ANSWER_CHUNK] for s in range(0, len(todo), ANSWER_CHUNK)]  # greedy: any cut
        label = f"{phase}: answering the probes in context"
        begin_phase(self.store, label, "sample", "self_edits", [k for k, _, _ in lists])
        with progress_bar(self.console) as progress:
            task = progress.add_task(label, total=len(todo))
            for chunk, answers in self.executor.map(probe_answer_work, chunks, self.answer_cfg):
                records = [
                    (k, {"prompt": edit["prompt"], "text": text, "written": edit["text"]})
                    for (k, _, edit), text in zip(chunk, answers)
                ]
                self.store.put_many("self_edits", records)
                progress.advance(task, len(chunk))

    def self_questions(
        self, phase: str, passages: list[Passage], sampling: SamplingConfig, samples: int, agree: int
    ) -> dict[str, list[Question]]:
        """Questions and references for a self-supervised reward, written once by the model the executor holds
        (the frozen initial policy) with each passage in its prompt: `question_lists` (under
        `{phase}/questions`), `samples` in-context answers to each question (sampled as `sampling` says), the
        reference each one's answers give (`qa.references`), and the questions the model answers
        closed-book already dropped (`qa.unanswered`). Filed per passage as `{phase}/{passage}` (kind
        "self_questions"), in chunks cut from all `passages` so that a resumed run samples what the
        interrupted one would have; returns them by passage key."""
        chunks = [passages[s : s + ANSWER_CHUNK] for s in range(0, len(passages), ANSWER_CHUNK)]
        done = self.store.keys("self_questions")
        todo = [c for c in chunks if any(key(phase, p.key) not in done for p in c)]
        if todo:
            asked = key(phase, "questions")
            written = self.question_lists(asked, [p for c in todo for p in c], sampling)

            def questions(p: Passage) -> list[str]:
                return [
                    q
                    for i in range(sampling.k)
                    for q in knowledge.probe_questions(written[key(asked, p.key, i)]["text"])
                ]

            items = [[(p, questions(p)) for p in c] for c in todo]
            label = f"{phase}: answering and filtering the self-written questions"
            begin_phase(self.store, label, "answer", "self_questions", [key(phase, p.key) for p in passages])
            settings = (sampling, samples, agree, self.answer_cfg, self.seed)
            with progress_bar(self.console) as progress:
                task = progress.add_task(label, total=sum(len(c) for c in todo))
                for item, kept in self.executor.map(self_question_work, items, *settings):
                    records = [(key(phase, p.key), [vars(q) for q in qs]) for (p, _), qs in zip(item, kept)]
                    self.store.put_many("self_questions", records)
                    progress.advance(task, len(item))
        stored = self.store.all("self_questions")
        return {p.key: [Question(**q) for q in stored[key(phase, p.key)]] for p in passages}

    def adapt(self, items: list[PlanItem], label: str = "adapting and scoring") -> None:
        """Each item's adapted answers filed under its key, one transaction per batch of adapters.

        The batches are cut from the whole list, finished or not, so a resumed run trains
        exactly the batches the uninterrupted one would have (same neighbours, same numerics)."""
        done = self.store.keys("answers")
        if all(item.key in done for item in items):
            return
        lm = self.executor.tokenizer_view()
        jobs = [
            AdaptJob(
                item.key,
                item.documents,
                [q for p in item.passages for q in probes_for(lm, p)],
                stable_seed(self.seed, item.key),
            )
            for item in items
        ]
        batches = work_batches(jobs, resolve_slots(self.executor, self.adapt_cfg), done)
        adapter_dir = self.store.dir / "adapters" if self.adapt_cfg.keep_adapters else None
        tokens = {
            j.key: training_tokens(lm, j.documents, self.adapt_cfg.epochs, self.adapt_cfg) for b in batches for j in b
        }
        hint = "On a laptop, the cpu-* recipes (configs/) are sized to finish in minutes to an hour."
        label = f"{label} ({len(jobs)} plans)"
        begin_phase(self.store, label, "adapt", "answers", [item.key for item in items])
        unit_tokens = [sum(tokens[j.key] for j in b) for b in batches]
        with TrainingProgress(self.console, label, unit_tokens, self.model_cfg, hint, self.store) as progress:
            unit_of = {id(b): u for u, b in enumerate(batches)}
            scorer = QuestionScorer(self.answer_cfg, self.judge)
            units = self.executor.map(adapt_batch, batches, self.adapt_cfg, scorer, adapter_dir)
            for batch, results in units:
                # The answers last: they mark a plan done, so a kill between the two writes redoes the batch.
                trained = [(r.key, r.training_record() | {"tokens": tokens[r.key]}) for r in results]
                self.store.put_many("adapt", trained)
                self.store.put_many("answers", [(r.key, r.probes) for r in results])
                progress.unit_done(unit_of[id(batch)])


def answer_work(
    lm: LoadedModel, item: list[tuple[Passage, list[Probe]]], answer: AnswerConfig, judge: JudgeConfig | None
):
    """Per passage of the chunk, the records of its probes (unadapted model)."""
    probes = [p for _, group in item for p in group]
    return regroup(score_probes(lm, probes, answer, judge), [len(group) for _, group in item])


def answers_in_context(
    lm: LoadedModel, prompts: list[str], answer: AnswerConfig, sampling: SamplingConfig | None = None
) -> list[str]:
    """The model's answers to probe-answer prompts (the passage in each), as long and as batched as `answer` says:
    greedy, or sampled as `sampling` says."""
    sampled = {} if sampling is None else {"temperature": sampling.temperature, "top_p": sampling.top_p}
    return generate(lm, prompts, max_new_tokens=answer.max_new_tokens, batch_size=answer.batch_size,
                    stop_at_newline=answer.stop_at_newline, **sampled)  # fmt: skip


def probe_answer_work(lm: LoadedModel, chunk: list[tuple[str, Passage, dict]], answer: AnswerConfig) -> list[str]:
    """Per (key, passage, written questions) of the chunk, the probes self-edit: each question the policy
    wrote, answered greedily by the model with the passage in its prompt."""
    asked = [(p, knowledge.probe_questions(edit["text"])) for _, p, edit in chunk]
    prompts = [knowledge.probe_answer_prompt(lm, p, q) for p, questions in asked for q in questions]
    texts = answers_in_context(lm, prompts, answer)
    answers = regroup(texts, [len(questions) for _, questions in asked])
    return [knowledge.probes_self_edit(questions, a) for (_, questions), a in zip(asked, answers)]


def self_question_work(
    lm: LoadedModel,
    chunk: list[tuple[Passage, list[str]]],
    sampling: SamplingConfig,
    samples: int,
    agree: int,
    answer: AnswerConfig,
    seed: int,
) -> list[list[Question]]:
    """Per (passage, questions written about it) of the chunk, the questions kept for a self-supervised reward
    with their references (see `KnowledgeSteps.self_questions`); seeded by the chunk's first passage."""
    torch.manual_seed(stable_seed(seed, "self-questions", chunk[0][0].key))
    prompts = [
        knowledge.probe_answer_prompt(lm, p, q) for p, questions in chunk for q in questions for _ in range(samples)
    ]
    texts = answers_in_context(lm, prompts, answer, sampling)
    per_question = iter(regroup(texts, [samples] * sum(len(questions) for _, questions in chunk)))
    found = [references(p, [(q, next(per_question)) for q in questions], agree) for p, questions in chunk]
    closed = [knowledge.answer_prompt(lm, p, q) for (p, _), refs in zip(chunk, found) for q in refs]
    closed_book = iter(
        generate(
            lm,
            closed,
            max_new_tokens=answer.max_new_tokens,
            batch_size=answer.batch_size,
            stop_at_newline=answer.stop_at_newline,
        )
    )
    return [unanswered(refs, [next(closed_book) for _ in refs]) for refs in found]


def evaluation_table(summary: dict[str, dict]) -> dict[str, dict[str, dict]]:
    """The table `seal.status.record_evaluation` files, from `summarise_conditions`' summary: each condition's
    intervals per metric, and its gain over `base` in the reward metric."""
    return {condition: row["ci"] | {"gain": row["gain_ci"]} for condition, row in summary.items()}


def summarise_conditions(
    answers: dict[str, list[dict]],
    adapt: dict[str, dict],
    passages: list[Passage],
    conditions: list[str],
    metrics: list[str],
    reward: str,
    phase: str = "",
) -> tuple[dict[str, dict], dict[str, dict[str, dict[str, float]]]]:
    """Per condition: macro (over passages) and micro (over questions) means, and the gain over
    `base` in the reward metric; per passage: each condition's scores. Keys are `{phase}{condition}/...`."""
    per_passage: dict[str, dict[str, dict[str, float]]] = {p.key: {} for p in passages}
    summary: dict[str, dict] = {}
    for condition in conditions:
        passage_means: dict[str, list[float]] = {m: [] for m in metrics}
        question_values: dict[str, list[float]] = {m: [] for m in metrics}
        seconds, n_runs = [], 0
        for p in passages:
            start = key(phase + condition, p.key, "")
            runs = [v for k, v in answers.items() if k.startswith(start)]
            n_runs += len(runs)
            seconds += [v["seconds"] for k, v in adapt.items() if k.startswith(start)]
            # A passage's score under a condition: the mean over its self-edits of the mean over its questions.
            per_passage[p.key][condition] = {m: mean([mean([r[m] for r in run]) for run in runs]) for m in metrics}
            for m in metrics:
                passage_means[m].append(per_passage[p.key][condition][m])
                question_values[m] += [r[m] for run in runs for r in run]
        summary[condition] = {
            "macro": {m: mean(passage_means[m]) for m in metrics},
            "micro": {m: mean(question_values[m]) for m in metrics},
            "ci": {m: bootstrap_ci(passage_means[m]) for m in metrics},  # over passages, of the macro mean
            "n_self_edits": n_runs if seconds else 0,
            "seconds_per_self_edit": mean(seconds) if seconds else None,
        }
    for condition in conditions:
        gains = [per_passage[p.key][condition][reward] - per_passage[p.key]["base"][reward] for p in passages]
        summary[condition]["gain"] = mean(gains)
        summary[condition]["gain_std"] = statistics.pstdev(gains) if gains else float("nan")
        summary[condition]["gain_ci"] = bootstrap_ci(gains)
    return summary, per_passage


def paired_comparisons(
    per_passage: dict[str, dict[str, dict[str, float]]], conditions: list[str], metrics: list[str]
) -> dict[str, dict[str, dict]]:
    """`seal.stats.paired_conditions` of passage scores (`per_passage[passage][condition][metric]`)."""
    return paired_conditions({c: {m: [s[c][m] for s in per_passage.values()] for m in metrics} for c in conditions})
