"""`adapt.slots: auto`: the most adapter slots whose training step fits a memory budget, measured on the model.

A step's memory grows about linearly in its slots: each slot adds its adapter's weights,
gradient and AdamW moments, and its documents' activations (the largest of them the
tokens x vocabulary logits). Two short steps at 1 and 2 slots, each on documents as long as
the config allows (`batch_size` documents of `max_doc_tokens`: no plan's step is longer),
give the line; the plan is the most slots under the budget. Measured, not modelled, so it
holds for any architecture, dtype and attention the model has.

On a GPU the peak is torch's allocator's; on a CPU, where torch keeps no statistics, it is
the peak of the bytes held by live tensors created during the step (every operator's output,
the backward pass's included, seen through a dispatch mode).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from seal.config import AdaptConfig
from seal.engine.adapters import AdapterBank
from seal.engine.training import TrainJob, train_adapters
from seal.models import LoadedModel

PROBE_SLOTS = (1, 2)  # the two measured steps; the line through them is extrapolated


@dataclass(frozen=True)
class SlotPlan:
    """What the planner measured and chose: peak bytes of a step = fixed_bytes + per_slot_bytes x slots."""

    slots: int
    fixed_bytes: float
    per_slot_bytes: float
    budget_bytes: int
    tokens_per_slot: int  # the documents of one slot's step, in tokens
    measured: dict[int, int]  # slots -> measured peak bytes of one step

    def summary(self) -> dict:
        """The plan in GiB, for a benchmark's report or a log line."""
        return {
            "slots": self.slots,
            "fixed_gib": self.fixed_bytes / 2**30,
            "per_slot_gib": self.per_slot_bytes / 2**30,
            "budget_gib": self.budget_bytes / 2**30,
            "tokens_per_slot": self.tokens_per_slot,
        }


class _LiveBytes(TorchDispatchMode):
    """The bytes held by tensors created on one device type while the mode is on, now and at their peak.
    A storage is counted once however many views of it are alive, until the last of them is gone."""

    def __init__(self, device_type: str):
        super().__init__()
        self.device_type = device_type
        self.live: dict[int, list[int]] = {}  # storage address -> [live tensors, bytes]
        self.now = self.peak = 0

    def _released(self, address: int) -> None:
        entry = self.live.get(address)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] == 0:
            self.now -= entry[1]
            del self.live[address]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if not isinstance(tensor, torch.Tensor) or tensor.device.type != self.device_type:
                continue
            storage = tensor.untyped_storage()
            address = storage.data_ptr()
            if address == 0:
                continue
            if address in self.live:
                self.live[address][0] += 1
            else:
                self.live[address] = [1, storage.nbytes()]
                self.now += storage.nbytes()
                self.peak = max(self.peak, self.now)
            weakref.finalize(tensor, self._released, address)
        return out


@contextmanager
def peak_memory(device: torch.device) -> Iterator[Callable[[], int]]:
    """Measures the peak memory taken by what runs in the block, over what was held when it began;
    yields a function that returns it in bytes (call it at the end of the block or after)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        result: list[int] = []

        def measured() -> int:
            if not result:
                torch.cuda.synchronize(device)
                result.append(torch.cuda.max_memory_allocated(device) - start)
            return result[0]

        yield measured
        measured()
        return
    mode = _LiveBytes(device.type)
    with mode:
        yield lambda: mode.peak


def step_peak_bytes(lm: LoadedModel, cfg: AdaptConfig, slots: int) -> int:
    """Peak memory of one packed training step of a fresh bank of `slots` adapters, each on `batch_size`
    documents of `max_doc_tokens` tokens (the longest step a plan can take); the bank included."""
    AdapterBank.detach_from(lm.model)
    tokens = _document_tokens(cfg)
    text = " the" * (tokens + 8)  # about a token a word in every BPE vocabulary; cut at max_doc_tokens
    step = cfg.model_copy(update={"epochs": 1, "slots": slots, "grad_accum": 1})
    jobs = [TrainJob([text] * cfg.batch_size, seed=slot) for slot in range(slots)]
    with peak_memory(lm.device) as peak:
        bank = AdapterBank.attach(lm.model, cfg.lora, slots)
        train_adapters(lm, bank, jobs, step)
        bank.detach()
    return peak()


def _document_tokens(cfg: AdaptConfig) -> int:
    return max(cfg.max_doc_tokens, cfg.pad_to) if cfg.loss_on_padding else cfg.max_doc_tokens


def free_memory_bytes(device: torch.device) -> int:
    """What a step may still take: the GPU's free memory (torch's cached blocks released first), or
    the available RAM (MemAvailable) on a CPU."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        return torch.cuda.mem_get_info(device)[0]
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("cannot read the available memory (/proc/meminfo); set adapt.memory_budget_gib")


def budget_bytes(lm: LoadedModel, cfg: AdaptConfig) -> int:
    """The memory budget of `slots: auto`: `memory_budget_gib`, else `memory_fraction` of what is free now."""
    if cfg.memory_budget_gib is not None:
        return int(cfg.memory_budget_gib * 2**30)
    return int(cfg.memory_fraction * free_memory_bytes(lm.device))


def plan_slots(lm: LoadedModel, cfg: AdaptConfig, budget: int) -> SlotPlan:
    """The most slots (at most `cfg.max_auto_slots`) whose training step fits `budget` bytes on this model.

    Raises:
        ValueError: the budget does not hold a step of one slot (the message gives both sizes).
    """
    measured = {k: step_peak_bytes(lm, cfg, k) for k in PROBE_SLOTS}
    low, high = PROBE_SLOTS
    per_slot = max((measured[high] - measured[low]) / (high - low), 1.0)
    fixed = measured[low] - per_slot * low
    if fixed + per_slot > budget:
        raise ValueError(
            f"adapt.slots auto: a training step of one slot needs {(fixed + per_slot) / 2**30:.2f} GiB, over the "
            f"memory budget of {budget / 2**30:.2f} GiB (raise adapt.memory_budget_gib or memory_fraction, or "
            "lower adapt.max_doc_tokens or batch_size)"
        )
    slots = min(cfg.max_auto_slots, math.floor((budget - fixed) / per_slot))
    return SlotPlan(slots, fixed, per_slot, budget, cfg.batch_size * _document_tokens(cfg), measured)


def resolved(lm: LoadedModel, cfg: AdaptConfig) -> AdaptConfig:
    """`cfg` with `slots: auto` replaced by the planned number, planned once per model and settings in this
    process; any other config as it is."""
    if cfg.slots != "auto" or cfg.engine == "peft":
        return cfg
    plans = lm.model.__dict__.setdefault("_seal_slot_plans", {})
    key = cfg.model_dump_json()
    if key not in plans:
        plans[key] = plan_slots(lm, cfg, budget_bytes(lm, cfg))
    return cfg.model_copy(update={"slots": plans[key].slots})


def planned_slots(lm: LoadedModel, _item, cfg: AdaptConfig) -> int:
    """The slots `resolved` chooses, as a unit of work an executor runs where the model is."""
    return resolved(lm, cfg).slots
