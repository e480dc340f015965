"""Likelihood scoring: batched, padded rows give each continuation's log-probability as scored alone."""

import torch

from seal.engine.sampling import continuation_logprobs

PROMPTS = ["Question: Who won the game?\nAnswer:", "The capital", "Topic: Geography. The capital of France is", "0"]
CONTINUATIONS = [" the Denver Broncos", " of France is Paris; the Seine flows through it.", " Paris", ""]


def reference(lm, prompt: str, continuation: str) -> tuple[float, int]:
    """From the full logits of the unpadded sequence: the continuation's tokens, each given all before it."""
    tok = lm.tokenizer
    p, c = tok(prompt, add_special_tokens=False).input_ids, tok(continuation, add_special_tokens=False).input_ids
    ids = torch.tensor([p + c])
    logprobs = torch.log_softmax(lm.model(input_ids=ids).logits[0].float(), -1)
    return sum(logprobs[len(p) - 1 + i, t].item() for i, t in enumerate(c)), len(c)


def test_batched_scores_equal_each_continuation_scored_alone(tiny_lm):
    expected = [reference(tiny_lm, p, c) for p, c in zip(PROMPTS, CONTINUATIONS)]
    assert len({n for _, n in expected}) == len(expected)  # continuations of different lengths share a batch
    for batch_size in (1, 2, 8):
        got = continuation_logprobs(tiny_lm, PROMPTS, CONTINUATIONS, batch_size=batch_size)
        for (lp, n), (want_lp, want_n) in zip(got, expected):
            assert n == want_n
            assert abs(lp - want_lp) < 1e-4
    assert expected[-1] == (0.0, 0)
