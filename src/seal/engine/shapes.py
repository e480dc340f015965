"""Paper-scale model shapes without their weights: the architecture of a known model with random weights.

Where a model's weights cannot be downloaded (an offline machine, a benchmark of speed and
memory only), its public config values are enough to build the same architecture: the same
matmul shapes, layers, heads and RoPE, so a step costs what it costs with the real weights.
The vocabulary is resized to the tokenizer the model is given (the embedded SmolLM2's 49,152
ids by default), so every id it produces decodes; the embedding and output layers are smaller
than the real model's by that much (7% of Qwen2.5-7B's weights, 17% of Llama-3.2-1B's).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerBase

from seal.config import ModelConfig
from seal.models import LoadedModel, _contiguous_input, default_device, load_tokenizer_view, resolve_dtype

_LLAMA3_ROPE = {"rope_type": "llama3", "low_freq_factor": 1.0, "high_freq_factor": 4.0}


@dataclass(frozen=True)
class ModelShape:
    """A model's architecture as its Hugging Face config states it (values from the published config.json)."""

    source: str  # the Hugging Face id the values are read from
    model_type: str  # transformers' model type: "llama", "qwen2"
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int  # the real model's vocabulary (the built model's follows its tokenizer)
    tied: bool  # input embedding and output layer share their weight
    rope: dict = field(default_factory=dict)  # transformers' rope_parameters
    max_positions: int = 131072
    norm_eps: float = 1e-5

    def config(self, vocab: int, **overrides):
        """The transformers config of this shape with `vocab` ids; `overrides` replace config fields
        (`num_hidden_layers=1, hidden_size=64` for a scaled-down variant)."""
        values = {
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "max_position_embeddings": self.max_positions,
            "rms_norm_eps": self.norm_eps,
            "tie_word_embeddings": self.tied,
            "rope_parameters": dict(self.rope),
            "vocab_size": vocab,
        }
        return AutoConfig.for_model(self.model_type, **(values | overrides))

    def parameters(self) -> int:
        """The real model's parameter count (its own vocabulary), from the shape alone."""
        head_dim = self.hidden // self.heads
        attention = self.hidden * head_dim * (2 * self.heads + 2 * self.kv_heads)
        if self.model_type == "qwen2":  # biases on q, k and v
            attention += head_dim * (self.heads + 2 * self.kv_heads)
        block = attention + 3 * self.hidden * self.intermediate + 2 * self.hidden
        return self.layers * block + self.vocab * self.hidden * (1 if self.tied else 2) + self.hidden


SHAPES: dict[str, ModelShape] = {
    "smollm2-135m": ModelShape(
        "HuggingFaceTB/SmolLM2-135M-Instruct", "llama", 576, 1536, 30, 9, 3, 49152, True,
        {"rope_type": "default", "rope_theta": 100000.0}, 8192,
    ),
    "llama-3.2-1b": ModelShape(
        "meta-llama/Llama-3.2-1B-Instruct", "llama", 2048, 8192, 16, 32, 8, 128256, True,
        _LLAMA3_ROPE | {"rope_theta": 500000.0, "factor": 32.0, "original_max_position_embeddings": 8192},
    ),
    "llama-3.2-3b": ModelShape(
        "meta-llama/Llama-3.2-3B-Instruct", "llama", 3072, 8192, 28, 24, 8, 128256, True,
        _LLAMA3_ROPE | {"rope_theta": 500000.0, "factor": 32.0, "original_max_position_embeddings": 8192},
    ),
    "llama-3.1-8b": ModelShape(
        "meta-llama/Llama-3.1-8B-Instruct", "llama", 4096, 14336, 32, 32, 8, 128256, False,
        _LLAMA3_ROPE | {"rope_theta": 500000.0, "factor": 8.0, "original_max_position_embeddings": 8192},
    ),
    "qwen2.5-0.5b": ModelShape(
        "Qwen/Qwen2.5-0.5B", "qwen2", 896, 4864, 24, 14, 2, 151936, True,
        {"rope_type": "default", "rope_theta": 1000000.0}, 32768, 1e-6,
    ),
    "qwen2.5-1.5b": ModelShape(
        "Qwen/Qwen2.5-1.5B", "qwen2", 1536, 8960, 28, 12, 2, 151936, True,
        {"rope_type": "default", "rope_theta": 1000000.0}, 131072, 1e-6,
    ),
    "qwen2.5-7b": ModelShape(
        "Qwen/Qwen2.5-7B", "qwen2", 3584, 18944, 28, 28, 4, 152064, False,
        {"rope_type": "default", "rope_theta": 1000000.0}, 131072, 1e-6,
    ),
}  # fmt: skip


def shape(name: str) -> ModelShape:
    """The known shape `name` (case-insensitive); ValueError listing the known ones."""
    try:
        return SHAPES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown model shape {name!r}; known: {', '.join(SHAPES)}") from None


def random_model(
    name: str,
    tokenizer: PreTrainedTokenizerBase,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    seed: int = 0,
    **overrides,
) -> LoadedModel:
    """The architecture of the known shape `name` with random weights (transformers' own initialisation),
    its vocabulary that of `tokenizer`, frozen and in eval mode on `device`: built there directly, so a
    7B model never passes through host memory in float32.

    Args:
        name: a key of `SHAPES` ("llama-3.2-1b", "qwen2.5-7b", ...).
        tokenizer: the tokenizer the model is used with (its pad token set; prompts are not chat-wrapped).
        dtype, device: where the weights live and what they compute in.
        seed: fixes the random weights.
        overrides: config fields replaced (`num_hidden_layers=1, hidden_size=64`: a variant for tests).
    """
    config = shape(name).config(
        len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        **overrides,
    )
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.eval()
    model.requires_grad_(False)
    head = model.get_output_embeddings()
    if head is not None:
        head.register_forward_pre_hook(_contiguous_input)
    return LoadedModel(model=model, tokenizer=tokenizer, name=f"random:{name}", chat=False)


class RandomModelSource:
    """A model source for an executor (`seal.cluster.LocalExecutor`): the known shape `name` with random weights
    and the embedded model's tokenizer, built on the default device the first time it is needed."""

    def __init__(self, name: str, dtype: str = "auto", **overrides):
        shape(name)  # an unknown name fails here, not in the first unit of work
        self.name, self.dtype, self.overrides, self.lm = name, dtype, overrides, None

    def __call__(self) -> LoadedModel:
        if self.lm is None:
            device = default_device()
            tokenizer = load_tokenizer_view(ModelConfig()).tokenizer
            self.lm = random_model(self.name, tokenizer, resolve_dtype(self.dtype, device), device, **self.overrides)
        return self.lm

    def adapter_files(self) -> list:
        return []  # no policy rounds on random weights
