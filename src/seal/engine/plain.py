"""The straightforward training loop, as a user porting the reference code would write it.

A plain loop at batch size 1 in the model's dtype, over a fresh peft LoRA (the benchmark's
baseline and `adapt.engine: peft`; the batched engine in `seal.engine.training` is the
default) or over every weight of the model (`knowledge cpt --method full`).
"""

from __future__ import annotations

import torch
from peft import get_peft_model

from seal.config import AdaptConfig
from seal.engine.training import document_order, learning_rate, tokenize_documents
from seal.models import LoadedModel


def fresh_peft_model(lm: LoadedModel, seed: int, cfg: AdaptConfig):
    torch.manual_seed(seed)
    return get_peft_model(lm.model, cfg.lora.to_peft())


def train_plain(
    model, params: list[torch.nn.Parameter], lm: LoadedModel, documents: list[str], seed: int, cfg: AdaptConfig
) -> list[float]:
    """The paper's inner loop written plainly: batch 1, AdamW, the configured decay, clipping.
    Returns the loss of every step."""
    if cfg.batch_size != 1:
        raise ValueError(
            "the plain (peft) inner loop trains at batch size 1; use engine: batched for adapt.batch_size > 1"
        )
    optimiser = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    docs = tokenize_documents(lm, documents, cfg)
    order = document_order(len(docs), cfg.epochs, seed)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: learning_rate(cfg, 1.0, step, len(order)))
    model.train()
    losses = []
    for index in order:
        ids, loss_mask = docs[index]
        input_ids = torch.tensor([ids], device=lm.device)
        labels = torch.tensor([[t if keep else -100 for t, keep in zip(ids, loss_mask)]], device=lm.device)
        loss = model(input_ids=input_ids, labels=labels, use_cache=False).loss
        loss.backward()
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optimiser.step()
        schedule.step()
        optimiser.zero_grad()
        losses.append(loss.item())
    model.eval()
    return losses


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
