"""Packed batches: many variable-length sequences in one row, with no padding computed anywhere.

The base model's matmuls run over the packed tokens; attention is causal within each
sequence and nothing across, through an attention function registered with transformers
and switched on only while a packed batch goes through the model.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

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

    def attend(self, query, key, value, dropout: float, scaling) -> torch.Tensor:
        def pad(x):  # (1, h, T, d) -> (n, h, L, d)
            return x[0].index_select(1, self.gather).view(x.shape[1], self.n, self.longest, x.shape[3]).transpose(0, 1)

        q, k, v = pad(query), pad(key), pad(value)
        n, heads, length, dim = q.shape
        kv_heads = k.shape[1]
        # Grouped-query attention without copying K and V per query head: the query heads that
        # share a KV head (HF's repeat_kv order) become rows of one matmul against it.
        q = q.reshape(n, kv_heads, heads // kv_heads * length, dim)
        scores = (q @ k.transpose(-1, -2)) * (scaling if scaling is not None else dim**-0.5)
        scores = scores.view(n, kv_heads, heads // kv_heads, length, length).masked_fill(self.hidden, float("-inf"))
        weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
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

    def attend(self, query, key, value, dropout: float, scaling) -> torch.Tensor:
        parts = [b.attend(query, key, value, dropout, scaling) for b in self.buckets]
        return torch.cat(parts).index_select(0, self.restore)[None]  # (1, T, h, d)


_layout: _Layout | None = None  # the packed batch now in the model


def packed_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """Causal attention within each packed sequence; query/key/value are (1, heads, tokens, dim)."""
    if _layout is None:
        raise RuntimeError("packed attention used outside seal.engine.packing.packed_forward")
    return _layout.attend(query, key, value, dropout, scaling), None


AttentionInterface.register(ATTENTION_NAME, packed_attention)


@contextmanager
def packed_forward(model: torch.nn.Module, lengths: list[int]):
    """Route the model's attention through `packed_attention` for one packed batch.

    transformers builds no mask for an attention function it has no mask function for, so
    no (tokens x tokens) mask is ever made.
    """
    global _layout
    config = model.config
    previous = config._attn_implementation
    config._attn_implementation = ATTENTION_NAME
    _layout = _Layout(lengths, next(model.parameters()).device)
    try:
        yield
    finally:
        config._attn_implementation = previous
        _layout = None


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
