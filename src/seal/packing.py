"""Packed batches: many variable-length sequences in one row, with no padding computed anywhere.

The base model's matmuls run over the packed tokens; attention runs per sequence (causal
within it, nothing across), through an attention function registered with transformers
and switched on only while a packed batch goes through the model.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

ATTENTION_NAME = "seal_packed"
_lengths: list[int] | None = None  # lengths of the packed sequences now in the model


def packed_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """Causal attention within each packed sequence; query/key/value are (1, heads, tokens, dim)."""
    if _lengths is None:
        raise RuntimeError("packed attention used outside seal.packing.packed_forward")
    gqa = query.shape[1] != key.shape[1]
    outputs, start = [], 0
    for length in _lengths:
        end = start + length
        outputs.append(
            F.scaled_dot_product_attention(
                query[:, :, start:end],
                key[:, :, start:end],
                value[:, :, start:end],
                is_causal=True,
                dropout_p=dropout,
                scale=scaling,
                enable_gqa=gqa,
            )
        )
        start = end
    return torch.cat(outputs, dim=2).transpose(1, 2).contiguous(), None


AttentionInterface.register(ATTENTION_NAME, packed_attention)


@contextmanager
def packed_forward(model: torch.nn.Module, lengths: list[int]):
    """Route the model's attention through `packed_attention` for one packed batch.

    transformers builds no mask for an attention function it has no mask function for, so
    no (tokens x tokens) mask is ever made.
    """
    global _lengths
    config = model.config
    previous = config._attn_implementation
    config._attn_implementation = ATTENTION_NAME
    _lengths = lengths
    try:
        yield
    finally:
        config._attn_implementation = previous
        _lengths = None


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


def per_sequence_loss(logits: torch.Tensor, labels: torch.Tensor, segment: torch.Tensor, n: int) -> torch.Tensor:
    """Mean next-token loss of each packed sequence, (n,).

    The cross-entropy runs in the logits' dtype: in bf16 it halves the cost of the largest
    tensor of the step (tokens x vocabulary), and the logits hold no more precision anyway."""
    token_loss = F.cross_entropy(logits, labels, ignore_index=-100, reduction="none").float()
    valid = (labels != -100).float()
    total = torch.zeros(n, device=logits.device).index_add(0, segment, token_loss * valid)
    count = torch.zeros(n, device=logits.device).index_add(0, segment, valid)
    return total / count.clamp(min=1)
