"""The straightforward training loop, as a user porting the reference code would write it.

A plain loop at batch size 1 in the model's dtype, over a fresh peft LoRA (the benchmark's
baseline and `adapt.engine: peft`; the batched engine in `seal.engine.training` is the
default) or over every weight of the model (`knowledge cpt --method full`).
"""

from __future__ import annotations

import math

import torch
from peft import get_peft_model

from seal.config import AdaptConfig
from seal.engine.architectures import peft_config
from seal.engine.training import document_order, learning_rate, optimiser_step, tokenize_documents
from seal.models import LoadedModel


def fresh_peft_model(lm: LoadedModel, seed: int, cfg: AdaptConfig):
    torch.manual_seed(seed)
    return get_peft_model(lm.model, peft_config(lm.model, cfg.lora))


def train_plain(
    model, params: list[torch.nn.Parameter], lm: LoadedModel, documents: list[str], seed: int, cfg: AdaptConfig
) -> list[float]:
    """The paper's inner loop written plainly, as HF's Trainer runs it: `batch_size` documents per forward
    pass (padded, the loss a mean over their trained tokens), `grad_accum` passes per AdamW step, the
    configured decay and clipping. Returns the loss of every forward pass."""
    optimiser = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    docs = tokenize_documents(lm, documents, cfg)
    order = document_order(len(docs), cfg.epochs, seed)
    passes = [order[s : s + cfg.batch_size] for s in range(0, len(order), cfg.batch_size)]
    total = math.ceil(len(passes) / cfg.grad_accum)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: learning_rate(cfg, 1.0, step, total))
    model.train()
    losses = []
    for n, batch in enumerate(passes):
        input_ids, labels, mask = _padded([docs[i] for i in batch], lm)
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels, use_cache=False).loss
        (loss / cfg.grad_accum).backward()
        losses.append(loss.item())
        if (n + 1) % cfg.grad_accum == 0 or n == len(passes) - 1:
            optimiser_step(optimiser, schedule, params, cfg.max_grad_norm)
    model.eval()
    return losses


def _padded(docs: list[tuple[list[int], list[bool]]], lm: LoadedModel):
    """Input ids, labels (-100 where not trained on, padding included) and attention mask, padded on the right."""
    longest = max(len(ids) for ids, _ in docs)
    input_ids = torch.full((len(docs), longest), lm.tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(docs), longest), -100, dtype=torch.long)
    mask = torch.zeros((len(docs), longest), dtype=torch.long)
    for row, (ids, keep) in enumerate(docs):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(ids)] = torch.tensor([t if k else -100 for t, k in zip(ids, keep)])
        mask[row, : len(ids)] = 1
    return input_ids.to(lm.device), labels.to(lm.device), mask.to(lm.device)


def train_peft_adapter(lm: LoadedModel, documents: list[str], seed: int, cfg: AdaptConfig):
    """A fresh peft adapter trained on `documents`; returns the peft model and its per-step losses."""
    model = fresh_peft_model(lm, seed, cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    return model, train_plain(model, params, lm, documents, seed, cfg)


def train_full(lm: LoadedModel, documents: list[str], seed: int, cfg: AdaptConfig) -> list[float]:
    """Every weight of `lm.model` trained on `documents`, in place (the caller keeps a copy to restore)."""
    params = list(lm.model.parameters())
    for p in params:
        p.requires_grad_(True)
    try:
        return train_plain(lm.model, params, lm, documents, seed, cfg)
    finally:
        for p in params:
            p.requires_grad_(False)
            p.grad = None
