"""Question answering, the knowledge domain's score: greedy answers to closed-book questions, their grades,
and the gold answer's likelihood, for a model or K adapted models at once."""

from __future__ import annotations

from dataclasses import dataclass

from seal.config import AnswerConfig, JudgeConfig
from seal.engine.adapters import AdapterBank
from seal.engine.sampling import Progress, continuation_logprobs, generate
from seal.grading import Grade, text_graders
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
