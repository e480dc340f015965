"""Graders for closed-book answers: plain functions over (gold, answer) strings.

Local graders need no network: SQuAD-style exact match and token F1, a verdict that agrees
with the paper's GPT-4.1 judge, and the gold answer's log-likelihood under a model
(`seal.sampling.continuation_logprobs`). `LLMJudge` asks any OpenAI-compatible endpoint.
"""

from seal.grading.judge import JUDGE_INSTRUCTIONS, JudgeError, LLMJudge
from seal.grading.metrics import exact_match, normalize, token_f1
from seal.grading.verdict import verdict, verdict_probability

__all__ = [
    "JUDGE_INSTRUCTIONS", "JudgeError", "LLMJudge", "exact_match", "normalize", "token_f1", "verdict",
    "verdict_probability",
]  # fmt: skip
