"""Question answering, the knowledge domain's score: greedy answers to closed-book questions, their grades,
and the gold answer's likelihood, for a model or K adapted models at once."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from seal.config import AnswerConfig, JudgeConfig
from seal.domains.knowledge import Passage, Question
from seal.engine.adapters import AdapterBank
from seal.engine.sampling import Progress, continuation_logprobs, generate
from seal.grading import Grade, text_graders
from seal.grading.metrics import contains, normalize
from seal.models import LoadedModel

TEXT_METRICS = ["em", "f1", "verdict"]  # graded on every answer; the judge too when a run has one


@dataclass(frozen=True)
class Probe:
    """One prompt the (adapted) model must answer, ready for the model, and the answer it is graded against."""

    question: str
    gold: str
    prompt: str  # formatted for the model
    continuation: str  # the gold answer as the model would continue the prompt


def graders_for(judge: JudgeConfig | None = None) -> dict[str, Grade]:
    """The text graders every probe record holds: em, f1, verdict, and the judge when one is configured."""
    return text_graders(TEXT_METRICS + (["judge"] if judge is not None else []), judge)


def score_probes(
    lm: LoadedModel,
    probes: list[Probe],
    cfg: AnswerConfig,
    judge: JudgeConfig | None = None,
    *,
    bank: AdapterBank | None = None,
    slots: list[int] | None = None,
    progress: Progress | None = None,
) -> list[dict]:
    """One record per probe: the greedy answer, a score per grader, and the gold answer's log-probability.

    Args:
        lm: the model (with an installed adapter bank when `slots` is given).
        probes: what to ask, and the gold answers.
        cfg: answer length, batch size, whether an answer ends at its first line break.
        judge: the LLM judge's endpoint, graded beside em, f1 and verdict when given (a config, not a
            client, so that work shipped to a worker process carries it).
        bank, slots: row i is answered by the adapter in `slots[i]` of `bank`.
        progress: called with the number of answers just generated.
    Returns:
        per probe `{question, gold, answer, <grader>: score..., logprob (sum), loglik (per token)}`.
    """
    graders = graders_for(judge)
    answers = generate(
        lm,
        [p.prompt for p in probes],
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.batch_size,
        stop_at_newline=cfg.stop_at_newline,
        bank=bank,
        slots=slots,
        progress=progress,
    )
    logprobs = continuation_logprobs(
        lm,
        [p.prompt for p in probes],
        [p.continuation for p in probes],
        batch_size=cfg.batch_size,
        bank=bank,
        slots=slots,
    )
    records = []
    for probe, answer, (logprob, n_tokens) in zip(probes, answers, logprobs):
        record = {"question": probe.question, "gold": probe.gold, "answer": answer}
        record |= {
            name: grade(probe.question, probe.gold, answer) for name, grade in graders.items() if name != "judge"
        }
        record |= {"logprob": logprob, "loglik": logprob / max(n_tokens, 1)}
        if "judge" in graders:  # last: the only grader that can fail (its endpoint), after the cheap ones
            record["judge"] = graders["judge"](probe.question, probe.gold, answer)
        records.append(record)
    return records


@dataclass(frozen=True)
class QuestionScorer:
    """`score_probes` with a run's answer settings and judge, as the engine's `Scorer`."""

    answer: AnswerConfig
    judge: JudgeConfig | None = None

    def __call__(
        self, lm: LoadedModel, probes: list[Probe], *, bank: AdapterBank | None = None, slots: list[int] | None = None
    ) -> list[dict]:
        return score_probes(lm, probes, self.answer, self.judge, bank=bank, slots=slots)


def references(passage: Passage, answered: list[tuple[str, list[str]]], agree: int = 2) -> list[Question]:
    """Candidate questions of a self-supervised reward, each with its reference: the in-context answer
    given most often among the question's samples. A question is kept when its reference is a span of
    the passage, or when at least `agree` samples gave it (normalised as SQuAD does); each question once.

    Args:
        passage: the passage the questions were written about.
        answered: (question, its in-context answers, one per sample), from the frozen initial model.
        agree: how many samples must give the same answer when it is not a span of the passage.
    """
    text = f" {normalize(passage.context)} "
    kept: dict[str, Question] = {}
    for question, answers in answered:
        votes = Counter(normalize(a) for a in answers if normalize(a))
        if not votes or normalize(question) in kept:
            continue
        best, count = votes.most_common(1)[0]
        if f" {best} " in text or count >= agree:
            reference = next(a.strip() for a in answers if normalize(a) == best)
            kept[normalize(question)] = Question(question, reference)
    return list(kept.values())


def unanswered(questions: list[Question], closed_book: list[str]) -> list[Question]:
    """The questions whose reference the closed-book model (its answer to each, in order) does not give
    already: a question it answers without the passage says nothing of what an adapter learnt."""
    return [q for q, answer in zip(questions, closed_book, strict=True) if not contains(q.answer, answer)]
