"""What differs between model architectures, for the engine: which layers a LoRA target names,
and whether a model's attention can run packed.

LoRA targets are named by what a layer does, with the Llama names (q_proj, k_proj, v_proj,
o_proj, gate_proj, up_proj, down_proj); each resolves to the layer of the model that does it.
Where an architecture fuses several of them into one layer (Phi-3's qkv_proj and
gate_up_proj), asking for any of them adapts the fused layer: one LoRA over the whole
fused output, as peft does for that layer. A name that is not a role is taken as a layer's
own name. Resolved names match as peft's `target_modules` match: the module's name, or a
dotted suffix of its full path.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from seal.config import LoraConfig

# Per role, the layer names that play it, in order of preference (the first one a model has wins).
# Qualified names where a bare one would also name another role's layer (GPT-BigCode's c_proj
# is the attention's output in attn and the MLP's output in mlp).
_FUSED_QKV = ("qkv_proj", "query_key_value", "Wqkv", "c_attn")
ALIASES: dict[str, tuple[str, ...]] = {
    "q_proj": ("q_proj", *_FUSED_QKV),
    "k_proj": ("k_proj", *_FUSED_QKV),
    "v_proj": ("v_proj", *_FUSED_QKV),
    "o_proj": ("o_proj", "out_proj", "self_attn.dense", "attention.dense", "self_attention.dense", "attn.c_proj"),
    "gate_proj": ("gate_proj", "gate_up_proj"),
    "up_proj": ("up_proj", "gate_up_proj", "fc1", "c_fc", "fc_in", "dense_h_to_4h"),
    "down_proj": ("down_proj", "fc2", "fc_out", "dense_4h_to_h", "mlp.c_proj"),
}
ROLES = tuple(ALIASES)

# Layer types whose attention is plain causal attention, with or without a window.
_ATTENTION_LAYER_TYPES = {"full_attention", "sliding_attention"}


def architecture(model: nn.Module) -> str:
    return type(model).__name__


def matches(name: str, targets: list[str]) -> bool:
    """Whether the module at `name` is one of `targets` (peft's rule: the whole name or a dotted suffix)."""
    return any(name == t or name.endswith("." + t) for t in targets)


def resolve_targets(model: nn.Module, targets: list[str]) -> list[str]:
    """The model's linear layers that `targets` name (roles or layer names), as peft `target_modules`.

    A role the model has no layer for is an error, except gate_proj where the MLP has no gate (an
    up projection but no gate: GPT-BigCode, Phi-2, StarCoder2): nothing plays that role there.
    Raises ValueError naming the architecture and the linear layers it has.
    """
    linear = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]

    def present(target: str) -> bool:
        return any(matches(name, [target]) for name in linear)

    resolved = []
    for target in targets:
        if present(target):
            resolved.append(target)
            continue
        found = next((alias for alias in ALIASES.get(target, ()) if present(alias)), None)
        if found is not None:
            resolved.append(found)
        elif target == "gate_proj" and any(present(alias) for alias in ALIASES["up_proj"]):
            continue
        else:
            raise ValueError(_no_layer_message(model, target, linear))
    return sorted(set(resolved))


def peft_config(model: nn.Module, lora: LoraConfig):
    """`lora` as a peft `LoraConfig` on this model's own layers (Phi-3's q_proj is its qkv_proj)."""
    return lora.to_peft(resolve_targets(model, lora.targets))


def adapted_layers(model: nn.Module, targets: list[str]) -> dict[str, nn.Linear]:
    """The linear layers `targets` resolve to, by their full names (what a LoRA with these targets adapts)."""
    resolved = resolve_targets(model, targets)
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and matches(name, resolved)
    }


def _no_layer_message(model: nn.Module, target: str, linear: list[str]) -> str:
    names = [target, *ALIASES.get(target, ())]
    modules = [name for name, _ in model.named_modules() if matches(name, names)]
    weights = [name for name, _ in model.named_parameters() if matches(name, names)]
    if modules:
        why = f"its {modules[0]} is a {type(model.get_submodule(modules[0])).__name__}, not an nn.Linear"
    elif weights:  # a mixture of experts' stacked weights (Mixtral, Qwen3-MoE, gpt-oss in transformers 5)
        why = f"its {weights[0]} is a stacked weight, not a linear layer"
    else:
        have = sorted({name.rsplit(".", 1)[-1] for name in linear})
        why = f"it has no linear layer that does {target}; its linear layers: {', '.join(have)}"
    return f"cannot adapt {target!r} in {architecture(model)}: {why} (set lora.targets to the layers to adapt)"


@dataclass
class PackingSupport:
    """What packed attention must watch for in a model that can run packed."""

    window: int | None  # the sliding window its config declares, until a layer is seen to pass it
    rope_limit: int | None  # where its RoPE's frequencies start to depend on the longest packed sequence


def packing_support(model: nn.Module) -> PackingSupport:
    """Whether seal's packed attention computes this model's attention exactly, checked once per model.

    Packed attention replaces the attention function a transformers model calls: it sees the
    query, key and value of each layer and the kwargs the layer passes (scaling, sliding_window,
    softcap, s_aux), never the mask the model would have built. A model whose attention is not
    such a call, or is shaped by the mask alone, cannot run packed.
    Raises ValueError("seal's packed attention does not support <architecture>: <why>").
    """
    support = getattr(model, "_seal_packing", None)
    if support is None:
        support = _packing_support(model)
        model._seal_packing = support
    return support


def _packing_support(model: nn.Module) -> PackingSupport:
    config = model.config
    why = None
    layer_types = set(getattr(config, "layer_types", None) or ())
    if not getattr(model, "_supports_attention_backend", False):
        why = "its attention does not go through transformers' attention functions"
    elif getattr(config, "attention_chunk_size", None):  # Llama 4
        why = "its chunked attention is built into the attention mask"
    elif layer_types - _ATTENTION_LAYER_TYPES:  # recurrent, convolutional, state-space layers
        why = f"it has layers other than attention ({', '.join(sorted(layer_types - _ATTENTION_LAYER_TYPES))})"
    elif any(getattr(m, "is_causal", True) is False for m in model.modules() if hasattr(m, "num_key_value_groups")):
        why = "its attention is not causal"
    if why is not None:
        raise ValueError(f"seal's packed attention does not support {architecture(model)}: {why}")
    window = getattr(config, "sliding_window", None)
    if layer_types and "sliding_attention" not in layer_types:
        window = None
    rope = getattr(config, "rope_parameters", None) or {}
    per_layer_type = rope and all(isinstance(v, dict) for v in rope.values())  # Gemma 3: one per layer type
    rope_limit = None
    for parameters in rope.values() if per_layer_type else [rope]:
        kind = parameters.get("rope_type", "default")
        if kind == "longrope":
            limit = parameters.get("original_max_position_embeddings", config.max_position_embeddings)
        elif "dynamic" in kind:
            limit = config.max_position_embeddings
        else:
            continue
        rope_limit = limit if rope_limit is None else min(rope_limit, limit)
    return PackingSupport(window=window, rope_limit=rope_limit)
