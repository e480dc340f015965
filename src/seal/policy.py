"""The ReST-EM policy: select the self-edits to learn from, fine-tune on them, merge, rebuild later rounds.

The loss is on the self-edit only (the prompt is context), as in the paper; the LoRA is
saved in peft format before it is merged, so every round's policy can be rebuilt from the
base model and the rounds' adapters, with plain peft.

A plain loop rather than TRL's SFTTrainer (`bench/policy_sft.py` runs the two on the same
examples, settings and LoRA): the loop keeps the model object in place, which lets a remote
worker hand back the adapter's files and keep its model as it was.
"""

from __future__ import annotations

import logging
import math
import random
import shutil
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from transformers import get_scheduler

from seal.config import ModelConfig, PolicyConfig
from seal.engine.adapters import AdapterBank
from seal.engine.architectures import peft_config
from seal.engine.training import optimiser_step
from seal.models import LoadedModel, load_from
from seal.status import begin_phase
from seal.store import RunStore

POLICY_DIR = "policy"


def policy_key(r: int) -> str:
    """Where the policy of round r (its adapter's directory, SFT examples and losses) is recorded."""
    return f"r{r}"


@dataclass(frozen=True)
class SFTExample:
    prompt: str  # formatted for the model (chat template applied where there is one)
    completion: str


@contextmanager
def _quiet_peft():
    with warnings.catch_warnings():
        # peft calls a transformers method that 5.x renamed; nothing for us to act on.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


@contextmanager
def _activation_checkpointing(model, enabled: bool):
    """Each layer's activations recomputed in the backward pass instead of held, while the policy
    trains; switched off after, as the inner loop's packed batches cannot be replayed outside
    their own forward pass."""
    if not enabled:
        yield
        return
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    try:
        yield
    finally:
        model.activation_checkpointing_disable()


def encode(lm: LoadedModel, example: SFTExample, max_tokens: int) -> tuple[list[int], list[int]]:
    """Token ids and labels (-100 on the prompt) of prompt + completion + end of sequence."""
    tok = lm.tokenizer
    prompt = tok(example.prompt, add_special_tokens=False).input_ids
    completion = tok(example.completion, add_special_tokens=False).input_ids + [tok.eos_token_id]
    ids = (prompt + completion)[:max_tokens]
    labels = ([-100] * len(prompt) + completion)[:max_tokens]
    return ids, labels


def _collate(rows: list[tuple[list[int], list[int]]], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    longest = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), longest), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for r, (row_ids, row_labels) in enumerate(rows):
        ids[r, : len(row_ids)], labels[r, : len(row_labels)] = torch.tensor(row_ids), torch.tensor(row_labels)
        mask[r, : len(row_ids)] = 1
    return {"input_ids": ids.to(device), "labels": labels.to(device), "attention_mask": mask.to(device)}


def _accumulate_gradients(
    model, rows: list[tuple[list[int], list[int]]], micro_batch_size: int, pad_id: int, device
) -> float:
    """Forward and backward of one optimiser step's rows, micro-batch by micro-batch; returns the step's
    loss (summed over completion tokens, divided by the step's token count, so micro-batching does not
    change the step)."""
    # Micro-batches of similar length: the same sum over the step's rows, with less padding computed.
    rows = sorted(rows, key=lambda row: len(row[0]))
    n_tokens = sum(sum(label != -100 for label in labels) for _, labels in rows)
    step_loss = 0.0
    for m in range(0, len(rows), micro_batch_size):
        batch = _collate(rows[m : m + micro_batch_size], pad_id, device)
        # Logits only where a completion token is predicted: the prompts (most of each sequence)
        # never reach the vocabulary-sized output layer.
        labels = batch["labels"][:, 1:]
        keep = labels.shape[1] - int((labels != -100).any(0).int().argmax())
        logits = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            use_cache=False,
            logits_to_keep=keep + 1,
        ).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(
            logits.flatten(0, 1).float(), labels[:, -keep:].flatten(), reduction="sum"
        ) / max(n_tokens, 1)
        loss.backward()
        step_loss += loss.item()
    return step_loss


def sft(lm: LoadedModel, examples: list[SFTExample], cfg: PolicyConfig, seed: int):
    """Train a fresh LoRA on `examples` (loss on completions, mean over their tokens per optimiser step).
    Returns the peft-wrapped model (not yet merged) and the loss of every optimiser step."""
    if not examples:
        raise ValueError("no examples to fine-tune the policy on")
    AdapterBank.detach_from(lm.model)
    torch.manual_seed(seed)
    with _quiet_peft():
        model = get_peft_model(lm.model, peft_config(lm.model, cfg.lora))
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    encoded = [encode(lm, e, cfg.max_tokens) for e in examples]
    rng = random.Random(seed)
    steps_per_epoch = math.ceil(len(encoded) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    schedule = get_scheduler(cfg.schedule, optimiser, int(cfg.warmup_ratio * total), total)
    pad_id = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else lm.tokenizer.eos_token_id
    losses: list[float] = []
    model.train()
    with _activation_checkpointing(lm.model, cfg.activation_checkpointing):
        for _ in range(cfg.epochs):
            order = list(range(len(encoded)))
            rng.shuffle(order)
            for start in range(0, len(order), cfg.batch_size):
                rows = [encoded[i] for i in order[start : start + cfg.batch_size]]
                losses.append(_accumulate_gradients(model, rows, cfg.micro_batch_size, pad_id, lm.device))
                optimiser_step(optimiser, schedule, params, cfg.max_grad_norm)
    model.eval()
    return model, losses


def merge(model: PeftModel) -> None:
    """Fold the LoRA into the base weights in place; the model object the caller holds stays valid."""
    model.merge_and_unload()


def apply_adapter(lm: LoadedModel, directory: Path, scale: float = 1.0) -> None:
    """Rebuild a later policy: load a saved round adapter onto the current policy and merge it (its update
    multiplied by `scale`: a gated merge may take part of it)."""
    AdapterBank.detach_from(lm.model)
    with _quiet_peft():
        model = PeftModel.from_pretrained(lm.model, str(directory))
        for module in model.modules():
            if isinstance(module, LoraLayer):
                module.scale_layer(scale)
        merge(model)


def select(rewards: dict[int, float | None], how: str, keep: int = 1) -> list[int]:
    """Indices of the self-edits to keep, in index order; None is an invalid self-edit and is never kept.
    best: the `keep` highest rewards (the earlier on ties), kept even when they do not gain (the release's
    k_best); positive: every one above 0."""
    valid = {i: r for i, r in rewards.items() if r is not None}
    if not valid:
        return []
    if how == "best":
        return sorted(sorted(valid, key=lambda i: (-valid[i], i))[:keep])
    if how == "positive":
        return [i for i, r in sorted(valid.items()) if r > 0]
    raise ValueError(f"unknown selection {how!r}; choose best or positive")


class PolicyOnDemand:
    """The model at the policy round in use: loaded on first need, later rounds' adapters merged in order.
    A model source for an executor (`seal.cluster`): what runs on it runs with the policy in use."""

    def __init__(self, cfg: ModelConfig, store: RunStore):
        self.cfg, self.store = cfg, store
        self.lm: LoadedModel | None = None
        self.applied = 0  # rounds merged into self.lm
        self.wanted = 0
        self._forget_damaged_rounds()

    def _forget_damaged_rounds(self) -> None:
        """A recorded round whose adapter is not as written (cut short, changed, missing) is forgotten,
        record and adapter, so the run fine-tunes it again from its recorded self-edits, as it first did
        (to the same adapter where training is deterministic: on CPU, or the same GPU and libraries)."""
        for round_key, record in self.store.all("policy").items():
            damage = record["adapter"] is not None and self.store.damage(record["adapter"])
            if damage:
                logging.getLogger(__name__).warning(
                    "%s: this policy round is fine-tuned again from its recorded self-edits", damage
                )
                self.store.delete("policy", round_key)
                shutil.rmtree(self.store.dir / record["adapter"], ignore_errors=True)

    def use(self, policy_round: int) -> None:
        """Model work from now on runs with the policy of `policy_round` (0: the model as loaded);
        rounds up to it must be recorded. Going back to an earlier round reloads the model."""
        if policy_round < self.applied:
            self.lm, self.applied = None, 0
        self.wanted = policy_round

    def __call__(self) -> LoadedModel:
        if self.lm is None:
            self.lm = load_from(self.cfg)
        while self.applied < self.wanted:
            self.applied += 1
            record = self.store.get("policy", policy_key(self.applied))
            if record is None:
                raise RuntimeError(f"policy of round {self.applied} is not recorded")  # a bug, not user input
            if record["adapter"] is not None:
                apply_adapter(self.lm, self.store.dir / record["adapter"])
        if self.applied != self.wanted:
            raise RuntimeError(f"model holds policy {self.applied}, policy {self.wanted} was asked for")
        return self.lm

    def adapter_files(self) -> list[tuple[str, dict[str, bytes]]]:
        """The adapters of rounds 1..wanted, as file contents (what a remote worker needs to follow)."""
        out = []
        for r in range(1, self.wanted + 1):
            record = self.store.get("policy", policy_key(r))
            if record is None:
                raise RuntimeError(f"policy of round {r} is not recorded")
            if record["adapter"] is not None:
                directory = self.store.dir / record["adapter"]
                out.append((f"round-{r}", {f.name: f.read_bytes() for f in sorted(directory.iterdir()) if f.is_file()}))
        return out

    def fine_tune(self, r: int, examples: list[tuple[str, str]], cfg: PolicyConfig, seed: int, executor) -> None:
        """Policy r from policy r-1 and (prompt, self-edit) examples, trained wherever the executor runs
        model work; the adapter is written whole to the run directory, then recorded. No examples:
        policy r is policy r-1."""
        self.use(r - 1)
        begin_phase(self.store, f"round {r}: fine-tuning the policy", "fine-tune", "policy", [policy_key(r)])
        record: dict = {"adapter": None, "examples": len(examples), "losses": []}
        if examples:
            began = time.perf_counter()
            ((_, (files, losses)),) = executor.map(sft_adapter_files, [examples], cfg, seed)
            adapter = f"{POLICY_DIR}/round-{r}"
            with self.store.checked_directory(adapter) as partial:
                partial.mkdir()
                for name, content in files.items():
                    (partial / name).write_bytes(content)
            record |= {"adapter": adapter, "losses": losses, "seconds": time.perf_counter() - began}
        self.store.put("policy", policy_key(r), record)
        self.use(r)  # merged from the saved adapter when the model is next needed, as on a resume


def sft_adapter_files(lm: LoadedModel, examples: list[tuple[str, str]], cfg: PolicyConfig, seed: int):
    """Fine-tune a policy LoRA on (prompt, completion) pairs and return its saved files and losses;
    the model is left as it was (the LoRA is unloaded, not merged)."""
    model, losses = sft(lm, [SFTExample(lm.format_prompt(p), c) for p, c in examples], cfg, seed)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            files = {f.name: f.read_bytes() for f in sorted(Path(tmp).iterdir()) if f.is_file()}
    finally:
        model.unload()
    return files, losses
