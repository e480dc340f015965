"""The inner loop's training step: K fresh LoRA adapters, one per plan, trained in packed batches.

Each adapter follows the schedule it would follow alone (the paper's batch size 1: one
document per optimiser step, its own shuffled order per epoch, linear learning-rate
decay over its own step count), so adapters with fewer documents simply finish early.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from seal.adapters import AdapterBank, StackedAdamW
from seal.config import AdaptConfig
from seal.models import LoadedModel
from seal.packing import pack, packed_forward, per_sequence_loss

Document = str | tuple[str, str]  # text trained on whole, or (prompt, completion) trained on the completion only


@dataclass
class TrainJob:
    documents: list[Document]
    seed: int  # fixes the adapter's initialisation and its document order
    lr: float | None = None  # this job's own settings (an ARC self-edit chooses them); None = the config's
    epochs: int | None = None


@dataclass
class TrainStats:
    losses: list[list[float]] = field(default_factory=list)  # per job, the loss of every step
    tokens: int = 0  # tokens through the model (for FLOP accounting)

    def first_last(self, job: int) -> tuple[float, float]:
        steps = self.losses[job]
        return (steps[0], steps[-1]) if steps else (float("nan"), float("nan"))


def document_order(n_docs: int, epochs: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    order: list[int] = []
    for _ in range(epochs):
        epoch = list(range(n_docs))
        rng.shuffle(epoch)
        order.extend(epoch)
    return order


def learning_rate(cfg: AdaptConfig, peak: float, step: int, total: int) -> float:
    """HF's schedules: linear warm-up over the first warmup_ratio of the steps, then linear or cosine decay to 0."""
    warmup = int(cfg.warmup_ratio * total)
    if step < warmup:
        return peak * step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    if cfg.schedule == "cosine":
        return peak * max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    return peak * max(0.0, 1.0 - progress)


def tokenize_documents(lm: LoadedModel, documents: list[Document], cfg: AdaptConfig) -> list[tuple[list[int], list[bool]]]:
    """Token ids and a loss mask per document (the paper's padding quirk adds trained-on pad tokens)."""
    tok = lm.tokenizer
    out = []
    for doc in documents:
        if isinstance(doc, tuple):
            prompt = tok(doc[0], add_special_tokens=True).input_ids
            completion = tok(doc[1], add_special_tokens=False).input_ids + [tok.eos_token_id]
            ids, loss = (prompt + completion)[: cfg.max_doc_tokens], ([False] * len(prompt) + [True] * len(completion))[: cfg.max_doc_tokens]
            out.append((ids, loss))
            continue
        ids = tok(doc, add_special_tokens=True).input_ids[: cfg.max_doc_tokens]
        loss = [True] * len(ids)
        if cfg.loss_on_padding and len(ids) < cfg.pad_to:
            pad = cfg.pad_to - len(ids)
            ids = ids + [tok.pad_token_id] * pad
            loss = loss + [True] * pad
        out.append((ids, loss))
    return out


def train_adapters(
    lm: LoadedModel,
    bank: AdapterBank,
    jobs: list[TrainJob],
    cfg: AdaptConfig,
    finished: Callable[[int, int], None] | None = None,
) -> TrainStats:
    """Train one adapter per job, `bank.slots` at a time, all together.

    The slots start on the first jobs; a slot whose job has taken its last step takes the next
    job in line at the next step (continuous batching), so steps stay full until the line runs
    dry instead of every group running as long as its longest plan. `finished(slot, j)` is
    called between steps when job j's adapter is trained, while it sits in `slot` and before the
    slot is reused; it may score or copy that adapter but must leave the bank's weights and the
    model's mode as it found them. With no more jobs than slots, job j trains and ends in slot j."""
    device = lm.device
    optimiser = StackedAdamW(bank, weight_decay=cfg.weight_decay)
    docs = [tokenize_documents(lm, job.documents, cfg) for job in jobs]
    orders = [document_order(len(d), job.epochs or cfg.epochs, job.seed) for d, job in zip(docs, jobs)]
    # Each adapter takes batch_size documents per optimiser step, in its own order.
    steps = [[order[s : s + cfg.batch_size] for s in range(0, len(order), cfg.batch_size)] for order in orders]
    stats = TrainStats(losses=[[] for _ in jobs])
    line = iter(range(len(jobs)))
    running: dict[int, int] = {}  # slot -> the job it trains

    def take_next(slot: int) -> None:
        for j in line:
            bank.reset(slot, jobs[j].seed)
            optimiser.reset(slot)
            if steps[j]:
                running[slot] = j
                return
            if finished is not None:  # nothing to train on: the fresh (no-op) adapter is the result
                finished(slot, j)

    bank.model.train()
    for layer in bank.layers.values():
        layer.lora_A.requires_grad_(True)
        layer.lora_B.requires_grad_(True)
    try:
        for slot in range(bank.slots):
            take_next(slot)
        while running:
            slots = sorted(running)
            owned = [running[s] for s in slots]  # the job each active slot trains
            taken = [len(stats.losses[j]) for j in owned]  # the steps each has taken
            step_docs = [steps[j][n] for j, n in zip(owned, taken)]
            owners = [s for s, ds in zip(slots, step_docs) for _ in ds]
            batch = pack([docs[j][d] for j, ds in zip(owned, step_docs) for d in ds], device)
            with bank.route(owners, batch["lengths"]), packed_forward(lm.model, batch["lengths"]):
                # squeeze, not [0]: select's backward would allocate and copy a second (tokens x vocab) tensor
                logits = lm.model(
                    input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
                ).logits.squeeze(0)
            sequence_losses = per_sequence_loss(logits, batch["labels"], batch["segment"], len(owners))
            # An adapter's loss is the mean over its documents of the step (HF's batch mean).
            owner_index = torch.tensor([slots.index(s) for s in owners], device=device)
            losses = torch.zeros(len(slots), device=device).index_add(0, owner_index, sequence_losses)
            losses = losses / torch.tensor([len(ds) for ds in step_docs], device=device)
            optimiser.zero_grad(slots)
            with warnings.catch_warnings():
                # The bank's gradients are strided views into one buffer on purpose (see AdapterBank.__init__).
                warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")
                losses.sum().backward()
            lrs = [learning_rate(cfg, jobs[j].lr or cfg.lr, n, len(steps[j])) for j, n in zip(owned, taken)]
            optimiser.step(slots, lrs, cfg.max_grad_norm)
            stats.tokens += batch["input_ids"].shape[1]
            for s, j, loss in zip(slots, owned, losses.tolist()):
                stats.losses[j].append(loss)
                if len(stats.losses[j]) == len(steps[j]):
                    del running[s]
                    if finished is not None:
                        finished(s, j)
                    take_next(s)
    finally:
        optimiser.zero_grad()
        bank.model.eval()
        for p in bank.parameters():
            p.requires_grad_(False)
    return stats
