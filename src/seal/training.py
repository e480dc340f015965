"""The inner loop's training step: K fresh LoRA adapters, one per plan, trained in packed batches.

Each adapter follows the schedule it would follow alone (the paper's batch size 1: one
document per optimiser step, its own shuffled order per epoch, linear learning-rate
decay over its own step count), so adapters with fewer documents simply finish early.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass, field


from seal.adapters import AdapterBank, StackedAdamW
from seal.config import AdaptConfig
from seal.models import LoadedModel
from seal.packing import pack, packed_forward, per_sequence_loss


@dataclass
class TrainJob:
    documents: list[str]
    seed: int  # fixes the adapter's initialisation and its document order


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


def tokenize_documents(lm: LoadedModel, documents: list[str], cfg: AdaptConfig) -> list[tuple[list[int], list[bool]]]:
    """Token ids and a loss mask per document (the paper's padding quirk adds trained-on pad tokens)."""
    tok = lm.tokenizer
    out = []
    for doc in documents:
        ids = tok(doc, add_special_tokens=True).input_ids[: cfg.max_doc_tokens]
        loss = [True] * len(ids)
        if cfg.loss_on_padding and len(ids) < cfg.pad_to:
            pad = cfg.pad_to - len(ids)
            ids = ids + [tok.pad_token_id] * pad
            loss = loss + [True] * pad
        out.append((ids, loss))
    return out


def train_adapters(lm: LoadedModel, bank: AdapterBank, jobs: list[TrainJob], cfg: AdaptConfig) -> TrainStats:
    """Train slot i of `bank` on jobs[i], all together; the slots are reset first."""
    if len(jobs) > bank.slots:
        raise ValueError(f"{len(jobs)} jobs for a bank of {bank.slots} slots")
    device = lm.device
    optimiser = StackedAdamW(bank, weight_decay=cfg.weight_decay)
    for slot, job in enumerate(jobs):
        bank.reset(slot, job.seed)
    docs = [tokenize_documents(lm, job.documents, cfg) for job in jobs]
    orders = [document_order(len(d), cfg.epochs, job.seed) for d, job in zip(docs, jobs)]
    stats = TrainStats(losses=[[] for _ in jobs])
    bank.model.train()
    for layer in bank.layers.values():
        layer.lora_A.requires_grad_(True)
        layer.lora_B.requires_grad_(True)
    try:
        for step in range(max((len(o) for o in orders), default=0)):
            active_jobs = [j for j, order in enumerate(orders) if step < len(order)]
            batch = pack([docs[j][orders[j][step]] for j in active_jobs], device)
            with bank.route(active_jobs, batch["lengths"]), packed_forward(lm.model, batch["lengths"]):
                logits = lm.model(
                    input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
                ).logits[0]
            losses = per_sequence_loss(logits, batch["labels"], batch["segment"], len(active_jobs))
            optimiser.zero_grad(active_jobs)
            with warnings.catch_warnings():
                # The bank's gradients are strided views into one buffer on purpose (see AdapterBank._flatten).
                warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")
                losses.sum().backward()
            # HF's linear schedule without warm-up: the k-th update of an adapter uses lr * (1 - k / total).
            lrs = [cfg.lr * max(0.0, 1 - optimiser.steps[j].item() / len(orders[j])) for j in active_jobs]
            optimiser.step(active_jobs, lrs, cfg.max_grad_norm)
            for j, loss in zip(active_jobs, losses.tolist()):
                stats.losses[j].append(loss)
            stats.tokens += batch["input_ids"].shape[1]
    finally:
        optimiser.zero_grad()
        bank.model.eval()
        for p in bank.parameters():
            p.requires_grad_(False)
    return stats
