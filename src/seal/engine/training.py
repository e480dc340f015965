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
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import torch

from seal.config import AdaptConfig
from seal.engine.adapters import AdapterBank, StackedAdamW
from seal.engine.distill import Distilled, TeacherTargets, teacher_targets, token_terms
from seal.engine.packing import pack, packed_forward, sequence_token_losses
from seal.models import LoadedModel

# text trained on whole, (prompt, completion) trained on the completion only, or text distilled from its context
Document = str | tuple[str, str] | Distilled


_on_tokens: ContextVar[Callable[[int], None] | None] = ContextVar("seal_training_progress", default=None)


@contextmanager
def reporting(on_tokens: Callable[[int], None]):
    """`on_tokens(n)` is called after every packed step trained in this process, with its tokens (a progress
    bar's finer steps); a worker process sends its steps' tokens to the driver, which reports them here too."""
    token = _on_tokens.set(on_tokens)
    try:
        yield
    finally:
        _on_tokens.reset(token)


def report_tokens(n: int) -> None:
    """Tell the `reporting` callback of this context, if any, that `n` more tokens were trained."""
    if (on_tokens := _on_tokens.get()) is not None:
        on_tokens(n)


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
    teacher_tokens: int = 0  # tokens through the teacher's forward passes (adapt.objective: distill)

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
    warmup = cfg.warmup_steps or int(cfg.warmup_ratio * total)  # HF: warmup_steps wins when set
    if step < warmup:
        return peak * step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    if cfg.schedule == "cosine":
        return peak * max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    return peak * max(0.0, 1.0 - progress)


def tokenize_documents(
    lm: LoadedModel, documents: list[Document], cfg: AdaptConfig
) -> list[tuple[list[int], list[bool]]]:
    """Token ids and a loss mask per document (the paper's padding quirk adds trained-on pad tokens)."""
    tok = lm.tokenizer
    out = []
    for doc in documents:
        if isinstance(doc, tuple):
            prompt = tok(doc[0], add_special_tokens=True).input_ids
            completion = tok(doc[1], add_special_tokens=False).input_ids + [tok.eos_token_id]
            ids, loss = (
                (prompt + completion)[: cfg.max_doc_tokens],
                ([False] * len(prompt) + [True] * len(completion))[: cfg.max_doc_tokens],
            )
            out.append((ids, loss))
            continue
        ids, loss = _text_document(tok, doc.text if isinstance(doc, Distilled) else doc, cfg.loss_after)
        ids, loss = ids[: cfg.max_doc_tokens], loss[: cfg.max_doc_tokens]
        if cfg.loss_on_padding and len(ids) < cfg.pad_to:
            pad = cfg.pad_to - len(ids)
            ids = ids + [tok.pad_token_id] * pad
            loss = loss + [True] * pad
        out.append((ids, loss))
    return out


def _text_document(tok, doc: str, loss_after: str | None) -> tuple[list[int], list[bool]]:
    """A text document's ids and loss mask: every token, or with `loss_after` only the tokens that start
    after the marker's first occurrence (the release masks up to the marker's tokens the same way)."""
    at = doc.find(loss_after) if loss_after else -1
    if at < 0:
        ids = tok(doc, add_special_tokens=True).input_ids
        return ids, [True] * len(ids)
    encoded = tok(doc, add_special_tokens=True, return_offsets_mapping=True)
    end = at + len(loss_after)
    # special tokens have the empty span (0, 0): never trained on, as they come before the marker
    return encoded.input_ids, [start >= end and stop > start for start, stop in encoded.offset_mapping]


@dataclass
class _Adapter:
    """A job in training: its tokenised documents, the documents of each of its forward passes (micro-steps:
    `grad_accum` of them make an optimiser step), and the loss of every micro-step so far."""

    job: TrainJob
    documents: list[tuple[list[int], list[bool]]]
    steps: list[list[int]]
    losses: list[float]
    grad_accum: int
    targets: list[TeacherTargets | None]  # per document, the teacher's (distilled documents under distill)

    @property
    def done(self) -> bool:
        return len(self.losses) == len(self.steps)

    @property
    def starts_a_step(self) -> bool:
        """The next micro-step is the first of an optimiser step (its gradients start from zero)."""
        return len(self.losses) % self.grad_accum == 0

    @property
    def ends_a_step(self) -> bool:
        """The micro-step just taken completes an optimiser step (or is the last one)."""
        return len(self.losses) % self.grad_accum == 0 or self.done

    def learning_rate(self, cfg: AdaptConfig) -> float:
        optimiser_steps = math.ceil(len(self.steps) / self.grad_accum)
        return learning_rate(cfg, self.job.lr or cfg.lr, (len(self.losses) - 1) // self.grad_accum, optimiser_steps)


def bucket(tokens: int) -> int:
    """The packed length a compiled step pads `tokens` to: the next of 64, 96, 128, 192, 256, ... (2^n and
    1.5 x 2^n), so a step computes at most a third more than its tokens and a run compiles a few shapes."""
    size = 64
    while size < tokens:
        size = size * 3 // 2 if size & (size - 1) == 0 else size * 4 // 3
    return size


COMPILED_SHAPES = 32  # distinct buckets a compiled model may see before torch falls back to eager (default 8)


def compiled(model: torch.nn.Module) -> torch.nn.Module:
    """The model compiled for packed training steps (once per model and process), for static shapes: a step
    padded to its `bucket` reuses the graph of the last step of that bucket. The adapters' routing and the
    packed attention run eagerly between the compiled parts (see MultiLoraLinear._delta)."""
    if "_seal_compiled" not in model.__dict__:  # not as an attribute: that would register it as a submodule
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, COMPILED_SHAPES)
        model.__dict__["_seal_compiled"] = torch.compile(model, dynamic=False)
    return model.__dict__["_seal_compiled"]


def _packed_losses(
    lm: LoadedModel,
    bank: AdapterBank,
    slots: list[int],
    batch_docs: list[list],
    compile: bool = False,
    targets: list[list[TeacherTargets | None]] | None = None,
    distill_weight: float = 1.0,
) -> torch.Tensor:
    """Forward pass over one packed batch (slot i's documents through its adapter) and each slot's loss:
    the mean over the trained tokens of its documents in the step (HF's loss of a padded batch). Compiled,
    the batch ends with a padding sequence up to its `bucket`: trained on nothing, attending only to
    itself, so the losses and gradients are those of the batch without it. A document with teacher
    `targets` (parallel to `batch_docs`) has, on each of its trained tokens, the loss
    w * KL(teacher || student) + (1 - w) * next-token loss, w = `distill_weight`."""
    owners = [s for s, docs in zip(slots, batch_docs) for _ in docs]
    sequences = [d for docs in batch_docs for d in docs]
    tokens = sum(len(ids) for ids, _ in sequences)
    if compile and bucket(tokens) > tokens:
        padding = bucket(tokens) - tokens
        sequences.append(([lm.tokenizer.pad_token_id] * padding, [False] * padding))
    batch = pack(sequences, lm.device)
    model = compiled(lm.model) if compile else lm.model
    routed = owners + owners[:1] * (len(sequences) - len(owners))
    with bank.route(routed, batch["lengths"]), packed_forward(lm.model, batch["lengths"]):
        # squeeze, not [0]: select's backward would allocate and copy a second (tokens x vocab) tensor
        logits = model(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
        ).logits.squeeze(0)
    totals, counts = sequence_token_losses(logits, batch["labels"], batch["segment"], len(sequences))
    if targets is not None:
        totals = totals + _distillation(logits, batch, [t for ts in targets for t in ts], distill_weight)
    totals, counts = totals[: len(owners)], counts[: len(owners)]
    owner_index = torch.tensor([i for i, docs in enumerate(batch_docs) for _ in docs], device=lm.device)
    total = torch.zeros(len(slots), device=lm.device).index_add(0, owner_index, totals)
    count = torch.zeros(len(slots), device=lm.device).index_add(0, owner_index, counts)
    return total / count.clamp(min=1)


def optimiser_step(optimiser: torch.optim.Optimizer, schedule, params: list[torch.nn.Parameter], max_grad_norm: float):
    """One step of a plain (unstacked) optimiser: the accumulated gradients clipped to `max_grad_norm` (0: not
    clipped), the step, the learning-rate schedule's step, the gradients zeroed (the peft inner loop, full
    fine-tuning and the policy's fine-tuning; the bank's stacked optimiser steps its slots itself)."""
    if max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimiser.step()
    schedule.step()
    optimiser.zero_grad()


def _distillation(
    logits: torch.Tensor, batch: dict, targets: list[TeacherTargets | None], weight: float
) -> torch.Tensor:
    """What distillation adds to each packed sequence's summed next-token loss: on every token with a
    teacher target, weight * (KL - next-token loss)."""
    added = torch.zeros(len(batch["lengths"]), device=logits.device)
    taught = [(s, t) for s, t in enumerate(targets) if t is not None and len(t.positions)]
    if not taught:
        return added
    starts = [sum(batch["lengths"][:s]) for s in range(len(targets))]
    positions = torch.cat([t.positions + starts[s] for s, t in taught])
    kl, nll = token_terms(
        logits,
        batch["labels"],
        positions,
        torch.cat([t.ids for _, t in taught]),
        torch.cat([t.logprobs for _, t in taught]),
    )
    owner = torch.tensor([s for s, t in taught for _ in range(len(t.positions))], device=logits.device)
    return added.index_add(0, owner, weight * (kl - nll))


def _teach(lm: LoadedModel, bank: AdapterBank, adapters: list[_Adapter], cfg: AdaptConfig) -> int:
    """Fill each adapter's teacher targets for its distilled documents, as many documents per pass as a
    training step of the whole bank takes; returns the tokens the teacher read."""
    wanted = [
        (a, d, (doc.context, *a.documents[d]))
        for a in adapters
        for d, doc in enumerate(a.job.documents)
        if isinstance(doc, Distilled)
    ]
    found, tokens = teacher_targets(lm, bank, [w for _, _, w in wanted], cfg.distill_top_k, bank.slots * cfg.batch_size)
    for (a, d, _), t in zip(wanted, found):
        a.targets[d] = t
    return tokens


@contextmanager
def _training(bank: AdapterBank, optimiser: StackedAdamW):
    """The bank's weights trainable and the model in train mode for the duration, frozen and in eval mode after."""
    bank.model.train()
    for p in bank.parameters():
        p.requires_grad_(True)
    try:
        yield
    finally:
        optimiser.zero_grad()
        bank.model.eval()
        for p in bank.parameters():
            p.requires_grad_(False)


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
    model's mode as it found them. With no more jobs than slots, job j trains and ends in slot j.

    Args:
        lm: the frozen base model the bank is installed in.
        bank: K adapter slots; each job gets a fresh adapter (seeded by `job.seed`) in a free slot.
        jobs: documents to train on, a seed, and optionally the job's own lr and epochs.
        cfg: epochs, lr, schedule, documents per step, clipping, weight decay.
        finished: called as `finished(slot, j)` when job j is trained.
    Returns:
        every job's per-step losses and the number of packed tokens trained.
    """
    optimiser = StackedAdamW(bank, weight_decay=cfg.weight_decay)
    adapters = []
    for job in jobs:
        documents = tokenize_documents(lm, job.documents, cfg)
        order = document_order(len(documents), job.epochs or cfg.epochs, job.seed)
        steps = [order[s : s + cfg.batch_size] for s in range(0, len(order), cfg.batch_size)]
        adapters.append(_Adapter(job, documents, steps, [], cfg.grad_accum, [None] * len(documents)))
    line = iter(range(len(jobs)))
    running: dict[int, int] = {}  # slot -> the job it trains
    stats = TrainStats(losses=[a.losses for a in adapters])  # the same lists, filled as training goes
    distilling = cfg.objective == "distill"
    if distilling:
        stats.teacher_tokens = _teach(lm, bank, adapters, cfg)

    def take_next(slot: int) -> None:
        for j in line:
            bank.reset(slot, jobs[j].seed)
            optimiser.reset(slot)
            if adapters[j].steps:
                running[slot] = j
                return
            if finished is not None:  # nothing to train on: the fresh (no-op) adapter is the result
                finished(slot, j)

    with _training(bank, optimiser):
        for slot in range(bank.slots):
            take_next(slot)
        while running:
            slots = sorted(running)
            owned = [running[s] for s in slots]  # the job each active slot trains
            training = [adapters[j] for j in owned]
            batch_docs = [[a.documents[d] for d in a.steps[len(a.losses)]] for a in training]
            batch_targets = [[a.targets[d] for d in a.steps[len(a.losses)]] for a in training] if distilling else None
            losses = _packed_losses(lm, bank, slots, batch_docs, cfg.compile, batch_targets, cfg.distill_weight)
            optimiser.zero_grad([s for s, a in zip(slots, training) if a.starts_a_step])
            with warnings.catch_warnings():
                # The bank's gradients are strided views into one buffer on purpose (see AdapterBank.__init__).
                warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")
                (losses.sum() / cfg.grad_accum).backward()  # accumulated as HF does: each micro-step's loss / steps
            for a, loss in zip(training, losses.tolist()):
                a.losses.append(loss)
            stepping = [(s, a) for s, a in zip(slots, training) if a.ends_a_step]
            optimiser.step([s for s, _ in stepping], [a.learning_rate(cfg) for _, a in stepping], cfg.max_grad_norm)
            step_tokens = sum(len(ids) for docs in batch_docs for ids, _ in docs)
            stats.tokens += step_tokens
            report_tokens(step_tokens)
            for slot, j in zip(slots, owned):
                if adapters[j].done:
                    del running[slot]
                    if finished is not None:
                        finished(slot, j)
                    take_next(slot)
    return stats
