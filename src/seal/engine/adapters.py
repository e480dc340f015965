"""LoRA adapters trained many at once over one frozen base model.

An `AdapterBank` replaces each target linear layer by a `MultiLoraLinear` holding K
stacked LoRA slots. A `Routing` object, shared by every layer, says which slot each
sequence of the current batch uses, so K self-edits are trained and scored in the same
forward/backward passes while each adapter sees only its own data and keeps its own
optimiser state: slot k ends as training it alone would leave it.

Two batch layouts are routed:
- rows: the batch dimension is the slot dimension (generation, likelihood scoring);
- packed: all sequences concatenated in one row (no padding anywhere), `lengths` giving
  each sequence's span; one grouped matmul takes each sequence through its own slot's A,
  another through its B (where the device has grouped matmuls for the dtype and shapes;
  elsewhere every token goes through all routed slots' A at once and a block mask keeps
  only its own slot's part before B).
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from seal.config import LoraConfig
from seal.engine.architectures import adapted_layers, resolve_targets


@dataclass
class Routing:
    ids: torch.Tensor | None = None  # (S,) slot of each sequence; None = base model only
    lengths: list[int] | None = None  # packed layout: the token count of each sequence, in order
    leading: int = 0  # n when ids are exactly 0..n-1 (the layers then slice instead of gathering), else 0
    version: int = 0  # bumped at every change, so layers know when their cached slot weights are stale
    _mask: tuple | None = None
    _offsets: tuple | None = None

    def offsets(self) -> torch.Tensor:
        """(sequences,) int32: where each packed sequence ends, the groups of a grouped matmul."""
        if self._offsets is None or self._offsets[0] != self.version:
            ends = torch.tensor(self.lengths).cumsum(0).to(device=self.ids.device, dtype=torch.int32)
            self._offsets = (self.version, ends)
        return self._offsets[1]

    def block_mask(self, rank: int, dtype: torch.dtype) -> torch.Tensor:
        """(tokens, slots * rank): 1 where a packed token's own slot's rank block is, built once per batch."""
        key = (self.version, rank, dtype)
        if self._mask is None or self._mask[0] != key:
            owner = torch.repeat_interleave(torch.arange(len(self.lengths)), torch.tensor(self.lengths))
            mask = nn.functional.one_hot(owner, len(self.lengths)).repeat_interleave(rank, dim=1)
            self._mask = (key, mask.to(device=self.ids.device, dtype=dtype))
        return self._mask[1]


ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
_PEFT_PREFIX = "base_model.model."


@dataclass(frozen=True)
class SavedAdapter:
    """A LoRA adapter read from a directory in peft's format (ours, or one peft saved): per adapted layer
    (named as in the base model) its A (rank, in) and B (out, rank), and the scale of B @ A."""

    layers: dict[str, tuple[torch.Tensor, torch.Tensor]]
    rank: int
    scaling: float

    @classmethod
    def read(cls, directory: str | Path) -> SavedAdapter:
        """The adapter saved in `directory`; ValueError naming what is missing or not supported."""
        directory = Path(directory)
        try:
            config = json.loads((directory / ADAPTER_CONFIG).read_text())
            weights = load_file(str(directory / ADAPTER_WEIGHTS))
        except (OSError, json.JSONDecodeError, SafetensorError) as err:
            raise ValueError(f"{directory} does not hold a readable peft adapter ({err})") from None
        if config.get("peft_type") != "LORA" or config.get("use_dora") or config.get("rank_pattern") or \
                config.get("alpha_pattern"):  # fmt: skip
            raise ValueError(
                f"{directory}: only plain LoRA adapters (one rank and alpha for every layer) are supported"
            )
        rank, alpha = int(config["r"]), float(config["lora_alpha"])
        scaling = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
        layers = {}
        for name, a in weights.items():
            if name.endswith(".lora_A.weight"):
                layer = name.removeprefix(_PEFT_PREFIX).removesuffix(".lora_A.weight")
                layers[layer] = (a, weights[name.replace(".lora_A.", ".lora_B.")])
        return cls(layers, rank, scaling)

    @property
    def targets(self) -> list[str]:
        """The short names of the adapted layers (`q_proj`, ...), as `LoraConfig.targets` names them."""
        return sorted({name.rsplit(".", 1)[-1] for name in self.layers})


@cache
def _grouped_mm_works(device: torch.device, dtype: torch.dtype, in_features: int, rank: int, out_features: int) -> bool:
    """Whether torch's grouped matmul runs here for these shapes, forward and backward (its
    kernels need a recent torch, and per device a dtype and stride alignment of their own)."""
    if not hasattr(nn.functional, "grouped_mm"):
        return False
    try:
        x = torch.zeros(24, in_features, device=device, dtype=dtype, requires_grad=True)
        a = torch.zeros(2, rank, in_features, device=device, dtype=dtype, requires_grad=True)
        b = torch.zeros(2, out_features, rank, device=device, dtype=dtype, requires_grad=True)
        offsets = torch.tensor([8, 24], device=device, dtype=torch.int32)
        h = nn.functional.grouped_mm(x, a.transpose(-1, -2), offs=offsets)
        out = nn.functional.grouped_mm(h, b.transpose(-1, -2), offs=offsets)
        out.backward(torch.ones_like(out))
        return True
    except (RuntimeError, NotImplementedError):
        return False


class MultiLoraLinear(nn.Module):
    def __init__(self, base: nn.Linear, lora_A: nn.Parameter, lora_B: nn.Parameter, cfg: LoraConfig, routing: Routing):
        """lora_A (slots, rank, in) and lora_B (slots, out, rank): the bank's views into its flat weights."""
        super().__init__()
        self.base = base
        self.scaling = cfg.alpha / cfg.rank
        self.dropout = cfg.dropout
        self.routing = routing
        self.lora_A = lora_A
        self.lora_B = lora_B
        self._cached: tuple | None = None

    def _slot_weights(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The routed slots' A and scaled B, transposed for x @ A^T @ B^T, in the compute dtype;
        cached while generating, where the same routing serves every decoding step."""
        route = self.routing

        def gather():
            if route.leading:  # slots 0..n-1 in order (training with every adapter active): a view, no copy
                a, b = self.lora_A[: route.leading], self.lora_B[: route.leading]
            else:  # index_select, not [ids]: its backward is one index_add instead of a slow index_put
                a, b = self.lora_A.index_select(0, route.ids), self.lora_B.index_select(0, route.ids)
            return a.to(dtype).transpose(-1, -2), (b * self.scaling).to(dtype).transpose(-1, -2)

        if torch.is_grad_enabled():
            return gather()
        if self._cached is None or self._cached[:2] != (route.version, dtype):
            self._cached = (route.version, dtype, *gather())
        return self._cached[2], self._cached[3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.routing.ids is None:
            return out
        return out + self._delta(x).view_as(out)

    # Left out of a compiled step (`adapt.compile`): the routing is Python state that changes at every batch,
    # and every change would compile the graph anew.
    @torch.compiler.disable
    def _delta(self, x: torch.Tensor) -> torch.Tensor:
        """The routed adapters' update of this layer's output, for each sequence its own slot's."""
        route = self.routing
        a, b = self._slot_weights(x.dtype)
        if self.dropout and self.training:
            x = nn.functional.dropout(x, self.dropout)
        if route.lengths is None:
            return torch.matmul(torch.matmul(x, a), b)
        slots, in_features, rank = a.shape
        if _grouped_mm_works(x.device, x.dtype, in_features, rank, b.shape[-1]):
            # Packed, each sequence through its own slot only: the block mask below computes
            # every token against all K slots (K times the adapter FLOPs, as many as the base
            # layer's own at K=15), which costs a compute-bound CPU a tenth of a step.
            offsets = route.offsets()
            h = nn.functional.grouped_mm(x.reshape(-1, in_features), a, offs=offsets)
            return nn.functional.grouped_mm(h, b, offs=offsets)
        # Packed, every token through all routed slots' A at once, then a block mask keeps each
        # token's own slot: three large ops per layer instead of two small matmuls per sequence.
        h = x.reshape(-1, in_features) @ a.transpose(0, 1).reshape(in_features, slots * rank)
        return (h * route.block_mask(rank, x.dtype)) @ b.reshape(slots * rank, -1)


class AdapterBank:
    """K LoRA slots installed in place into a model; the base weights stay frozen and shared."""

    def __init__(self, model: nn.Module, cfg: LoraConfig, slots: int):
        self.model = model
        self.cfg = cfg
        self.slots = slots
        self.routing = Routing()
        self.targets = resolve_targets(model, cfg.targets)  # the model's own layer names, as peft's target_modules
        targets = list(adapted_layers(model, self.targets).items())
        if not targets:
            raise ValueError(f"no layer to adapt in {type(model).__name__}: lora.targets is empty")
        # Every LoRA weight, and its gradient, is a view into one (slots, n) tensor: autograd
        # accumulates all gradients straight into `flat_grad`, and the optimiser updates all
        # adapters with a handful of whole-tensor operations per step instead of a dozen per
        # weight (420 weights for a 30-layer model).
        shapes = [((cfg.rank, m.in_features), (m.out_features, cfg.rank)) for _, m in targets]
        total = sum(math.prod(a) + math.prod(b) for a, b in shapes)
        self.flat = torch.zeros(slots, total, device=targets[0][1].weight.device)
        self.flat_grad = torch.zeros_like(self.flat)
        self.layers: dict[str, MultiLoraLinear] = {}
        offset = 0
        for (name, module), (shape_a, shape_b) in zip(targets, shapes):
            lora_A, offset = self._view(offset, shape_a)
            lora_B, offset = self._view(offset, shape_b)
            layer = MultiLoraLinear(module, lora_A, lora_B, cfg, self.routing)
            parent_name, attr = name.rsplit(".", 1)
            setattr(model.get_submodule(parent_name), attr, layer)
            self.layers[name] = layer

    def _view(self, offset: int, shape: tuple[int, int]) -> tuple[nn.Parameter, int]:
        """A (slots, *shape) weight at `offset` of the flat weights, its gradient at the same place of
        `flat_grad`; and the offset after it."""
        end = offset + math.prod(shape)
        weight = nn.Parameter(self.flat[:, offset:end].unflatten(1, shape), requires_grad=False)
        weight.grad = self.flat_grad[:, offset:end].unflatten(1, shape)
        return weight, end

    @staticmethod
    def installed(model: nn.Module) -> AdapterBank | None:
        """The bank installed in `model`, if any."""
        return getattr(model, "_seal_bank", None)

    @staticmethod
    def detach_from(model: nn.Module) -> None:
        """Take the model's bank out, if it has one, leaving plain nn.Linear layers (what peft
        injects its own layers into, and what a merge or a weight restore expects)."""
        bank = AdapterBank.installed(model)
        if bank is not None:
            bank.detach()

    @classmethod
    def attach(cls, model: nn.Module, cfg: LoraConfig, slots: int) -> AdapterBank:
        """The model's bank, installed once per process and reused while its shape fits."""
        bank = cls.installed(model)
        if bank is not None and bank.cfg == cfg and bank.slots >= slots:
            return bank
        if bank is not None:
            bank.detach()
        bank = cls(model, cfg, slots)
        model._seal_bank = bank
        return bank

    def detach(self) -> None:
        for name, layer in self.layers.items():
            parent_name, attr = name.rsplit(".", 1)
            setattr(self.model.get_submodule(parent_name), attr, layer.base)
        self.layers = {}
        if AdapterBank.installed(self.model) is self:
            del self.model._seal_bank

    def parameters(self) -> list[nn.Parameter]:
        """The per-layer LoRA weights (views into `flat`)."""
        return [p for layer in self.layers.values() for p in (layer.lora_A, layer.lora_B)]

    def train_flops_per_token(self) -> int:
        """The useful training FLOPs of one packed token: 4 per frozen weight it goes through
        (forward, and backward to the input only) and 6 per weight of its own slot (the weight
        gradient too); the other slots do nothing for it. An untied input embedding is a lookup,
        not a matmul, and attention's own products (a few percent at short lengths) are left out."""
        skip = {id(p) for p in self.parameters()}
        embedding, head = self.model.get_input_embeddings(), self.model.get_output_embeddings()
        if head is None or embedding.weight is not head.weight:
            skip.add(id(embedding.weight))
        frozen = sum(p.numel() for p in self.model.parameters() if id(p) not in skip)
        return 4 * frozen + 6 * self.flat.shape[1]

    @torch.no_grad()
    def reset(self, slot: int, seed: int) -> None:
        """A fresh adapter in `slot`: A as peft initialises it (Kaiming-uniform), B zero, so it starts as a no-op."""
        gen = torch.Generator().manual_seed(seed)
        for layer in self.layers.values():
            fan_in = layer.lora_A.shape[-1]
            bound = 1.0 / math.sqrt(fan_in)  # kaiming_uniform_ with a=sqrt(5)
            init = torch.rand(layer.lora_A.shape[1:], generator=gen) * (2 * bound) - bound
            layer.lora_A[slot].copy_(init)
            layer.lora_B[slot].zero_()

    def snapshot(self, slot: int) -> torch.Tensor:
        """A copy of the adapter in `slot` (its row of the flat weights), for `holding`."""
        return self.flat[slot].clone()

    @contextmanager
    def holding(self, adapters: list[torch.Tensor]):
        """Slots 0..n-1 hold the given snapshots, in eval mode, for the duration; the slots' own
        weights and the model's mode are put back after (training may be paused in them)."""
        n, training = len(adapters), self.model.training
        saved = self.flat[:n].clone()
        with torch.no_grad():
            self.flat[:n].copy_(torch.stack(adapters))
        self.model.eval()
        try:
            yield
        finally:
            with torch.no_grad():
                self.flat[:n].copy_(saved)
            self.model.train(training)

    @contextmanager
    def route(self, ids: list[int] | torch.Tensor | None, lengths: list[int] | None = None):
        route = self.routing
        previous = (route.ids, route.lengths, route.leading)
        device = next(iter(self.layers.values())).lora_A.device
        route.ids = None if ids is None else torch.as_tensor(ids, dtype=torch.long, device=device)
        route.leading = 0
        if route.ids is not None and torch.equal(route.ids, torch.arange(len(route.ids), device=device)):
            route.leading = len(route.ids)
        route.lengths = lengths
        route.version += 1
        try:
            yield
        finally:
            route.ids, route.lengths, route.leading = previous
            route.version += 1

    @torch.no_grad()
    def load(self, slot: int, adapters: list[tuple[SavedAdapter, float]]) -> None:
        """Slot `slot` holds the weighted sum of saved adapters' updates, exactly: sum_i w_i s_i B_i A_i is one
        LoRA of the concatenated ranks, A = [A_1; A_2; ...] and B = [c_1 B_1, c_2 B_2, ...] with c_i = w_i s_i / s
        (s: the bank's scale), so the bank's rank must hold the adapters' ranks together. One adapter with
        weight 1 answers as it does alone; with weight w its update is scaled by w.

        Args:
            slot: the slot to fill (what was there is replaced).
            adapters: (adapter, weight) pairs; layers an adapter does not adapt get no update from it.
        """
        needed = sum(adapter.rank for adapter, _ in adapters)
        if needed > self.cfg.rank:
            raise ValueError(f"adapters of ranks summing to {needed} do not fit a bank of rank {self.cfg.rank}")
        self.flat[slot].zero_()
        start = 0
        for adapter, weight in adapters:
            unknown = sorted(set(adapter.layers) - set(self.layers))
            if unknown:
                raise ValueError(f"the adapter adapts {unknown[0]}, which this bank does not")
            for name, (a, b) in adapter.layers.items():
                layer = self.layers[name]
                layer.lora_A[slot, start : start + adapter.rank] = a
                layer.lora_B[slot, :, start : start + adapter.rank] = b * (weight * adapter.scaling / layer.scaling)
            start += adapter.rank

    def state_dict(self, slot: int) -> dict[str, torch.Tensor]:
        """Slot `slot` under peft's key names, so peft and plain transformers can load it."""
        out = {}
        for name, layer in self.layers.items():
            out[f"base_model.model.{name}.lora_A.weight"] = layer.lora_A[slot].detach().float().contiguous().cpu()
            out[f"base_model.model.{name}.lora_B.weight"] = layer.lora_B[slot].detach().float().contiguous().cpu()
        return out

    def save(self, slot: int, directory: str | Path, base_model: str) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file(self.state_dict(slot), str(directory / ADAPTER_WEIGHTS))
        config = {
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base_model,
            "r": self.cfg.rank,
            "lora_alpha": self.cfg.alpha,
            "lora_dropout": self.cfg.dropout,
            "target_modules": self.targets,
            "bias": "none",
            "fan_in_fan_out": False,
            "inference_mode": True,
        }
        (directory / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2))
        return directory


class StackedAdamW:
    """AdamW over a bank's (slots, n) weights with per-slot step counts, learning rates and clipping.

    Each active slot gets one fused AdamW update (torch's own kernel, one pass over its
    weights, gradient and moments), so K slots are exactly K independent optimisers; clipping
    by each slot's own gradient norm goes through the kernel's gradient scale. At batch size
    1 the optimiser, not the model, is often the largest cost: one pass per slot is the floor.
    """

    def __init__(self, bank: AdapterBank, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        self.weights, self.grads = bank.flat, bank.flat_grad
        self.betas, self.eps, self.weight_decay = betas, eps, weight_decay
        self.exp_avg = torch.zeros_like(self.weights)
        self.exp_avg_sq = torch.zeros_like(self.weights)
        self.steps = torch.zeros(bank.slots, device=self.weights.device)

    @torch.no_grad()
    def reset(self, slot: int) -> None:
        """A fresh optimiser for `slot` (a new adapter starts there)."""
        self.exp_avg[slot].zero_()
        self.exp_avg_sq[slot].zero_()
        self.steps[slot] = 0

    def zero_grad(self, slots: list[int] | None = None) -> None:
        if slots is None:
            self.grads.zero_()
        for k in slots or []:
            self.grads[k].zero_()

    @torch.no_grad()
    def step(self, slots: list[int], lr: list[float], max_grad_norm: float = 0.0) -> list[float]:
        """One update of each slot in `slots` at its learning rate; returns their gradient norms."""
        norms = []
        for k, slot_lr in zip(slots, lr):
            norm = self.grads[k].norm().item()
            norms.append(norm)
            coef = min(1.0, max_grad_norm / (norm + 1e-6)) if max_grad_norm > 0 else 1.0
            self.steps[k] += 1
            torch._fused_adamw_(
                [self.weights[k]], [self.grads[k]], [self.exp_avg[k]], [self.exp_avg_sq[k]], [], [self.steps[k]],
                lr=slot_lr, beta1=self.betas[0], beta2=self.betas[1], weight_decay=self.weight_decay, eps=self.eps,
                amsgrad=False, maximize=False, grad_scale=torch.tensor(1.0 / coef) if coef < 1.0 else None,
                found_inf=None,
            )  # fmt: skip
        return norms
