"""The straightforward inner loop, as a user porting the reference code would write it.

One fresh peft LoRA per plan, a plain training loop at batch size 1 in the model's dtype,
answers generated per plan, the adapter unloaded afterwards. Kept as the benchmark's
baseline and as `adapt.engine: peft`; the batched engine in `seal.loop` is the default.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model

from seal.config import AdaptConfig, AnswerConfig
from seal.grading import LLMJudge
from seal.models import LoadedModel
from seal.training import document_order, learning_rate, tokenize_documents


def fresh_peft_model(lm: LoadedModel, seed: int, cfg: AdaptConfig):
    torch.manual_seed(seed)
    peft_cfg = PeftLoraConfig(
        r=cfg.lora.rank, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout, target_modules=cfg.lora.targets
    )
    return get_peft_model(lm.model, peft_cfg)


def train_plain(model, params: list[torch.nn.Parameter], lm: LoadedModel, documents: list[str], seed: int, cfg: AdaptConfig) -> list[float]:
    """The paper's inner loop written plainly: batch 1, AdamW, the configured decay, clipping; returns per-step losses."""
    if cfg.batch_size != 1:
        raise ValueError("the plain (peft) inner loop trains at batch size 1; use engine: batched for adapt.batch_size > 1")
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


def adapt_and_score_peft(
    lm: LoadedModel,
    jobs,
    adapt: AdaptConfig,
    answer: AnswerConfig,
    *,
    judge: LLMJudge | None = None,
    adapter_dir: Path | None = None,
) -> Iterator[list]:
    from seal.adapters import AdapterBank
    from seal.loop import AdaptResult, adapter_path, score_probes

    AdapterBank.detach_from(lm.model)
    for job in jobs:
        began = time.perf_counter()
        model, losses = train_peft_adapter(lm, job.documents, job.seed, adapt)
        if adapter_dir is not None:
            model.save_pretrained(adapter_path(adapter_dir, job.key))
        try:
            records = score_probes(LoadedModel(model, lm.tokenizer, lm.name, lm.chat), job.probes, answer, judge=judge)
        finally:
            model.unload()  # back to the plain base model, adapter discarded
        first_last = (losses[0], losses[-1]) if losses else (float("nan"), float("nan"))
        yield [AdaptResult(job.key, records, first_last, len(losses), time.perf_counter() - began)]
