"""Packed batches: many variable-length sequences in one row, with no padding computed anywhere.

The base model's matmuls run over the packed tokens; attention is causal within each
sequence and nothing across, through an attention function registered with transformers
and switched on only while a packed batch goes through the model. It computes what the
layer asks of any attention function: a sliding window (Mistral, Gemma, Qwen2's windowed
layers), logit softcapping (Gemma 2), attention sinks (gpt-oss); `seal.engine.architectures`
refuses, once per model, what it cannot see (attention shaped by the mask alone).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

from seal.engine.architectures import architecture, packing_support

ATTENTION_NAME = "seal_packed"
PAD_TOLERANCE = 1.25  # a bucket may compute up to this many times its real tokens


class _Bucket:
    """Sequences of similar length, padded to the longest of them, for one attention call."""

    def __init__(self, starts: list[int], lengths: list[int], device: torch.device):
        self.n, self.longest = len(lengths), max(lengths)
        positions = torch.arange(self.longest, device=device)
        valid = positions[None, :] < torch.tensor(lengths, device=device)[:, None]  # (n, L)
        self.gather = (torch.tensor(starts, device=device)[:, None] + positions[None, :]).flatten()
        self.gather = torch.where(valid.flatten(), self.gather, self.gather[0])  # padding reads any real token
        self.rows = valid.flatten().nonzero().squeeze(1)  # padded slot of each real token
        causal = positions[None, :] <= positions[:, None]  # (L, L): query row, key column
        self.hidden = ~(causal[None] & valid[:, None, :])[:, None, None]  # (n, 1, 1, L, L)
        self.valid = valid
        self.windowed: dict[int, torch.Tensor] = {}

    def windowed_mask(self, window: int) -> torch.Tensor:
        """`hidden`, and keys `window` or more positions back (HF's sliding window: a query sees itself
        and the window - 1 tokens before it). Padding queries keep their keys: a row with no key
        at all is NaN, whose gradient would reach the real rows' even though its output is dropped."""
        if window >= self.longest:
            return self.hidden
        if window not in self.windowed:  # once per batch: every layer with this window shares it
            positions = torch.arange(self.longest, device=self.hidden.device)
            far = positions[:, None] - positions[None, :] >= window  # (L, L)
            self.windowed[window] = self.hidden | (far & self.valid[:, :, None])[:, None, None]
        return self.windowed[window]

    def attend(self, query, key, value, dropout: float, scaling, window, softcap, sinks) -> torch.Tensor:
        def pad(x):  # (1, h, T, d) -> (n, h, L, d)
            return x[0].index_select(1, self.gather).view(x.shape[1], self.n, self.longest, x.shape[3]).transpose(0, 1)

        q, k, v = pad(query), pad(key), pad(value)
        n, heads, length, dim = q.shape
        kv_heads = k.shape[1]
        # Grouped-query attention without copying K and V per query head: the query heads that
        # share a KV head (HF's repeat_kv order) become rows of one matmul against it.
        q = q.reshape(n, kv_heads, heads // kv_heads * length, dim)
        scores = (q @ k.transpose(-1, -2)) * (scaling if scaling is not None else dim**-0.5)
        if softcap is not None:
            scores = torch.tanh(scores / softcap) * softcap
        scores = scores.view(n, kv_heads, heads // kv_heads, length, length).masked_fill(
            self.hidden if window is None else self.windowed_mask(window), float("-inf")
        )
        if sinks is None:
            weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        else:  # one more logit per head that takes part in the softmax and is dropped after it
            sink = sinks.float().view(1, kv_heads, heads // kv_heads, 1, 1).expand(n, -1, -1, length, 1)
            weights = torch.softmax(torch.cat([scores.float(), sink], dim=-1), dim=-1)[..., :-1].to(q.dtype)
        if dropout:
            weights = F.dropout(weights, dropout)
        out = (weights.view(n, kv_heads, -1, length) @ v).view(n, heads, length, dim)
        return out.transpose(1, 2).reshape(n * length, heads, dim).index_select(0, self.rows)


class _Layout:
    """The packed sequences grouped into buckets of similar length, one attention call per bucket.

    A call per sequence (K short documents per step, 30 layers, forward and backward) costs
    more in per-call overhead than in arithmetic; one call over all of them, padded to the
    longest, wastes more than it saves when a long document (the passage) sits among short
    ones (its implications). Buckets whose padding stays under a quarter get both."""

    def __init__(self, lengths: list[int], device: torch.device):
        starts = [sum(lengths[:i]) for i in range(len(lengths))]
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        groups: list[list[int]] = [[]]
        for i in order:
            group = groups[-1] + [i]
            if groups[-1] and lengths[i] * len(group) > PAD_TOLERANCE * sum(lengths[j] for j in group):
                groups.append([i])
            else:
                groups[-1] = group
        self.buckets = [_Bucket([starts[i] for i in g], [lengths[i] for i in g], device) for g in groups]
        # Token positions in the order the buckets return them, and back to the packed order.
        returned = [starts[i] + p for g in groups for i in g for p in range(lengths[i])]
        self.restore = torch.argsort(torch.tensor(returned, device=device))
        self.longest = max(lengths)
        self.saw_window = False  # whether a layer passed a sliding window (see packed_forward)

    def attend(self, query, key, value, dropout: float, scaling, window, softcap, sinks) -> torch.Tensor:
        if window is not None:
            self.saw_window = True
        parts = [b.attend(query, key, value, dropout, scaling, window, softcap, sinks) for b in self.buckets]
        return torch.cat(parts).index_select(0, self.restore)[None]  # (1, T, h, d)


_layout: _Layout | None = None  # the packed batch now in the model


@torch.compiler.disable  # its layout is Python state that changes at every batch (see MultiLoraLinear._delta)
def packed_attention(
    module,
    query,
    key,
    value,
    attention_mask,
    dropout: float = 0.0,
    scaling=None,
    sliding_window: int | None = None,
    softcap: float | None = None,
    s_aux: torch.Tensor | None = None,
    **kwargs,
):
    """Causal attention within each packed sequence; query/key/value are (1, heads, tokens, dim).
    sliding_window, softcap and s_aux (attention sinks, one logit per head) as transformers passes them."""
    if _layout is None:
        raise RuntimeError("packed attention used outside seal.engine.packing.packed_forward")
    return _layout.attend(query, key, value, dropout, scaling, sliding_window, softcap, s_aux), None


AttentionInterface.register(ATTENTION_NAME, packed_attention)


@contextmanager
def packed_forward(model: torch.nn.Module, lengths: list[int]):
    """Route the model's attention through `packed_attention` for one packed batch.

    transformers builds no mask for an attention function it has no mask function for, so
    no (tokens x tokens) mask is ever made.
    Raises ValueError for a model whose attention cannot run packed (`packing_support`), or whose
    RoPE would scale this batch's positions by its longest sequence.
    """
    global _layout
    support = packing_support(model)
    longest = max(lengths)
    if support.rope_limit is not None and longest > support.rope_limit:
        raise ValueError(
            f"seal's packed attention does not support {architecture(model)} on sequences over "
            f"{support.rope_limit} tokens (this batch has {longest}): its RoPE scaling depends on the "
            "longest sequence of the batch; keep adapt.max_doc_tokens at or under that"
        )
    config = model.config
    previous = config._attn_implementation
    config._attn_implementation = ATTENTION_NAME
    _layout = layout = _Layout(lengths, next(model.parameters()).device)
    try:
        yield
    finally:
        config._attn_implementation = previous
        _layout = None
    if support.window is not None and longest > support.window:
        # The first batch longer than the declared window shows whether the layers pass it to the
        # attention function (Mistral, Gemma, Qwen2) or leave it to the mask alone (PhiMoE).
        if not layout.saw_window:
            raise ValueError(
                f"seal's packed attention does not support {architecture(model)}: its sliding window "
                f"({support.window} tokens) is applied only through the attention mask"
            )
        support.window = None


def pack(sequences: list[tuple[list[int], list[bool]]], device: torch.device) -> dict:
    """One row holding every (token ids, loss mask) sequence, with per-token labels and segment ids."""
    input_ids, positions, labels, segment = [], [], [], []
    for s, (ids, loss) in enumerate(sequences):
        input_ids += ids
        positions += range(len(ids))
        labels += [ids[i + 1] if loss[i + 1] else -100 for i in range(len(ids) - 1)] + [-100]
        segment += [s] * len(ids)

    def as_long(xs: list[int]) -> torch.Tensor:
        return torch.tensor(xs, dtype=torch.long, device=device)

    return {
        "input_ids": as_long(input_ids)[None],
        "position_ids": as_long(positions)[None],
        "labels": as_long(labels),
        "segment": as_long(segment),
        "lengths": [len(ids) for ids, _ in sequences],
    }


def sequence_token_losses(
    logits: torch.Tensor, labels: torch.Tensor, segment: torch.Tensor, n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The summed next-token loss of each packed sequence and its number of trained tokens, each (n,).

    The cross-entropy runs in the logits' dtype: in bf16 it halves the cost of the largest
    tensor of the step (tokens x vocabulary), and the logits hold no more precision anyway."""
    token_loss = F.cross_entropy(logits, labels, ignore_index=-100, reduction="none").float()
    valid = (labels != -100).float()
    total = torch.zeros(n, device=logits.device).index_add(0, segment, token_loss * valid)
    count = torch.zeros(n, device=logits.device).index_add(0, segment, valid)
    return total, count
