"""The grader registry: every grader under its name, with one signature and what it needs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from seal.config import JudgeConfig
from seal.grading.judge import LLMJudge
from seal.grading.metrics import contains, exact_match, token_f1
from seal.grading.verdict import verdict

Grade = Callable[[str, str, str], float]  # (question, gold, answer) -> score in [0, 1]


@dataclass(frozen=True)
class Grader:
    name: str
    help: str
    grade: Grade | None = None  # None: computed from the model, not from the answer's text
    needs_model: bool = False
    needs_network: bool = False
    recorded: bool = True  # scored on every answer of a run (containment is for grade-check only)


GRADERS: dict[str, Grader] = {
    g.name: g
    for g in (
        Grader("em", "normalised exact match", lambda q, g, a: exact_match(g, a)),
        Grader("f1", "token F1 (SQuAD)", lambda q, g, a: token_f1(g, a)),
        Grader("verdict", "local yes/no that agrees with the paper's GPT-4.1 judge", verdict),
        Grader(
            "contains", "the normalised gold answer within the answer", lambda q, g, a: contains(g, a), recorded=False
        ),
        Grader("loglik", "gold answer's log-probability per token under the (adapted) model", needs_model=True),
        Grader("judge", "yes/no from an LLM judge (the `judge` config section)", needs_network=True),
    )
}


def grader_names(*, recorded_only: bool = False) -> list[str]:
    return [name for name, g in GRADERS.items() if g.recorded or not recorded_only]


def answer_grader_names() -> list[str]:
    """The graders that grade an answer's text (every grader but those computed from the model)."""
    return [name for name, g in GRADERS.items() if not g.needs_model]


def describe(names: list[str] | None = None) -> str:
    """'verdict | em | ...' for help texts."""
    return " | ".join(names or grader_names(recorded_only=True))


def metrics(judge: JudgeConfig | None) -> list[str]:
    """The metrics a run records on every answer: each recorded grader, the judge only when one is configured."""
    return [name for name in grader_names(recorded_only=True) if name != "judge" or judge is not None]


def check_metric(name: str, judge: JudgeConfig | None, what: str = "reward") -> None:
    """A clear error when `name` is not a metric this run records."""
    available = metrics(judge)
    if name not in available:
        hint = " (the judge needs a `judge` config section)" if name == "judge" else ""
        raise ValueError(f"{what} {name!r} is not available{hint}; choose from {', '.join(available)}")


def text_graders(names: list[str], judge: JudgeConfig | None = None) -> dict[str, Grade]:
    """The graders among `names` that read an answer's text, ready to call (the judge built from its config)."""
    out: dict[str, Grade] = {}
    for name in names:
        grader = GRADERS.get(name)
        if grader is None:
            raise ValueError(f"unknown grader {name!r}; choose from {describe(grader_names())}")
        if grader.needs_network:
            if judge is None:
                raise ValueError("the judge grader needs a `judge` config section")
            out[name] = LLMJudge(judge).verdict
        elif grader.grade is not None:
            out[name] = grader.grade
    return out
