"""Batched generation and likelihood scoring, each row optionally routed to its own adapter slot."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import TYPE_CHECKING

import torch
from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from seal.engine.adapters import AdapterBank
from seal.models import LoadedModel

if TYPE_CHECKING:
    from seal.engine.structured import Constraint

Progress = Callable[[int], None]  # called with the number of items just finished


_TOKEN_CLASSES: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}


def _token_classes(tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """Per vocabulary id: does the token contain a line break, is it only whitespace (cached per tokenizer)."""
    key = id(tokenizer)
    if key not in _TOKEN_CLASSES:
        texts = [tokenizer.decode([i]) for i in range(len(tokenizer))]
        _TOKEN_CLASSES[key] = (
            torch.tensor(["\n" in t for t in texts]),
            torch.tensor([t.strip() == "" for t in texts]),
        )
    return _TOKEN_CLASSES[key]


class StopAtNewline(StoppingCriteria):
    """Ends a row at the first line break that follows some non-blank text."""

    def __init__(self, tokenizer, batch_size: int, device: torch.device):
        newline, blank = _token_classes(tokenizer)
        self.newline, self.blank = newline.to(device), blank.to(device)
        self.started = torch.zeros(batch_size, dtype=torch.bool, device=device)

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        last = input_ids[:, -1]
        newline = self.newline[last]
        # A token like "Paris.\n" both starts and ends the answer.
        text_before_break = ~self.blank[last]
        done = newline & (self.started | text_before_break)
        self.started |= ~self.blank[last]
        return done


def _routed(bank: AdapterBank | None, slots: list[int] | None):
    if bank is None or slots is None:
        return nullcontext()
    return bank.route(slots)


def _batches(n: int, batch_size: int, lengths: list[int]) -> list[list[int]]:
    """Indices grouped by similar length, so little padding is computed."""
    order = sorted(range(n), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


@torch.no_grad()
def generate(
    lm: LoadedModel,
    prompts: list[str],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    batch_size: int = 32,
    stop_at_newline: bool = False,
    bank: AdapterBank | None = None,
    slots: list[int] | None = None,
    progress: Progress | None = None,
    constraint: Constraint | None = None,
) -> list[str]:
    """Continue each prompt, in batches of similar length.

    Args:
        lm: the model.
        prompts: already formatted for the model (see `LoadedModel.format_prompt`).
        max_new_tokens: the most tokens each continuation may have (with a constraint, room for a whole text).
        temperature, top_p: sampling; greedy decoding when the temperature is 0.
        batch_size: prompts per `generate` call.
        stop_at_newline: end a continuation at its first line break (and keep only the first line).
        bank, slots: prompt i is continued by the adapter in `slots[i]` of `bank`.
        progress: called with the number of prompts just continued.
        constraint: every continuation is a text of its language (`seal.engine.structured`), each row with
            its own grammar state.
    Returns:
        the continuations, stripped, in the order of `prompts`.
    """
    tok = lm.tokenizer
    encoded = [tok(p, add_special_tokens=False).input_ids for p in prompts]
    outputs: list[str] = [""] * len(prompts)
    for batch in _batches(len(prompts), batch_size, [len(e) for e in encoded]):
        inputs = tok.pad({"input_ids": [encoded[i] for i in batch]}, return_tensors="pt").to(lm.device)
        stopping = StoppingCriteriaList()
        if stop_at_newline:
            stopping.append(StopAtNewline(tok, len(batch), lm.device))
        sample = temperature > 0
        with _routed(bank, None if slots is None else [slots[i] for i in batch]):
            out = lm.model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=sample,
                temperature=temperature if sample else None,
                top_p=top_p if sample else None,
                top_k=None,
                stopping_criteria=stopping,
                logits_processor=LogitsProcessorList([constraint.logits_processor()] if constraint else []),
                pad_token_id=tok.pad_token_id,
            )
        texts = tok.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        for i, text in zip(batch, texts):
            outputs[i] = text.strip().split("\n")[0].strip() if stop_at_newline else text.strip()
        if progress:
            progress(len(batch))
    return outputs


@torch.no_grad()
def continuation_logprobs(
    lm: LoadedModel,
    prompts: list[str],
    continuations: list[str],
    *,
    batch_size: int = 32,
    bank: AdapterBank | None = None,
    slots: list[int] | None = None,
) -> list[tuple[float, int]]:
    """(sum of log-probabilities, number of tokens) of each continuation given its prompt.

    Rows are padded on the left (positions counted from each row's first real token), so
    every continuation ends at the last position and the model's head runs only over the
    last positions that predict one: tokens x vocabulary logits for the prompts, the bulk
    of the sequence, are never made (the largest tensor of the pass, 150k wide for Qwen)."""
    tok = lm.tokenizer
    pairs = [
        (tok(p, add_special_tokens=False).input_ids, tok(c, add_special_tokens=False).input_ids)
        for p, c in zip(prompts, continuations)
    ]
    results: list[tuple[float, int]] = [(0.0, 0)] * len(pairs)
    for batch in _batches(len(pairs), batch_size, [len(p) + len(c) for p, c in pairs]):
        longest = max(len(pairs[i][0]) + len(pairs[i][1]) for i in batch)
        window = max(len(pairs[i][1]) for i in batch) + 1  # the last positions, whose logits are kept
        ids = torch.full((len(batch), longest), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), longest), dtype=torch.long)
        for row, i in enumerate(batch):
            seq = pairs[i][0] + pairs[i][1]
            ids[row, longest - len(seq) :] = torch.tensor(seq)
            mask[row, longest - len(seq) :] = 1
        ids, mask = ids.to(lm.device), mask.to(lm.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with _routed(bank, None if slots is None else [slots[i] for i in batch]):
            logits = lm.model(
                input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False, logits_to_keep=window
            ).logits
        logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # position j predicts token j + 1
        token_lp = logprobs.gather(-1, ids[:, longest - window + 1 :, None])[..., 0]
        for row, i in enumerate(batch):
            n = len(pairs[i][1])
            results[i] = (token_lp[row, window - 1 - n :].sum().item(), n)
    return results
