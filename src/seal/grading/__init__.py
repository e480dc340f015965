"""Graders for closed-book answers, in one registry with one signature: `grade(question, gold, answer)`.

Text graders need no network: SQuAD-style exact match and token F1, a verdict that agrees with
the paper's GPT-4.1 judge, and containment of the gold answer. `loglik` needs the model (the
gold answer's log-likelihood, computed by `seal.experiments.qa`), `judge` the network (any
OpenAI-compatible endpoint). Scoring, reward validation, the CLI's help and `seal grade-check`
all read `GRADERS`, so a grader added here reaches every one of them.
"""

from seal.grading.judge import JUDGE_INSTRUCTIONS, JudgeError, LLMJudge
from seal.grading.metrics import contains, exact_match, normalize, token_f1
from seal.grading.registry import (
    GRADERS,
    Grade,
    Grader,
    answer_grader_names,
    check_metric,
    describe,
    grader_names,
    metrics,
    text_graders,
)
from seal.grading.verdict import verdict, verdict_probability

__all__ = [
    "GRADERS",
    "JUDGE_INSTRUCTIONS",
    "Grade",
    "Grader",
    "JudgeError",
    "LLMJudge",
    "answer_grader_names",
    "check_metric",
    "contains",
    "describe",
    "exact_match",
    "grader_names",
    "metrics",
    "normalize",
    "text_graders",
    "token_f1",
    "verdict",
    "verdict_probability",
]
