"""Grammar-constrained sampling: every sampled text is in a given language (a JSON schema, a regex).

    constraint = regex_constraint(lm.tokenizer, pattern)
    texts = generate(lm, prompts, max_new_tokens=128, temperature=1.0, constraint=constraint)

A `Constraint` is compiled once per tokenizer and language; `generate` asks it for a fresh
`logits_processor()` per batch, which keeps one grammar state per row (left-padded rows,
greedy or sampled, the chat template or not). At each step the processor masks the tokens
that would leave the language; where the grammar allows only one continuation (the keys of a
JSON object, say) it allows only the first token of that text's own tokenization, so forced
text costs as many tokens as it does when written by hand (llguidance's mask does so by itself;
xgrammar's, outlines-core's and lm-format-enforcer's also allow "{" then '"' where the text is
'{"', up to a token per character); once a row's text is complete it allows only the
end-of-sequence token. The grammar engine is llguidance (a Rust wheel with no Python
dependencies; bench/structured.py compares it with xgrammar, outlines and lm-format-enforcer).
A domain describes its own language (the ARC self-edit's: `seal.domains.arc.grammar`).
"""

from __future__ import annotations

import json
from functools import lru_cache

import numpy as np
import torch
from transformers import LogitsProcessor

SEPARATORS = (", ", ": ")  # json.dumps' own: a schema's texts are written compactly, as json.dumps writes them


# ---------------------------------------------------------------------------------------------
# Constraints: a compiled grammar, and per batch a logits processor with one state per row


class Constraint:
    """A language compiled for one tokenizer; `logits_processor()` is fresh for each batch."""

    def __init__(self, tokenizer, grammar: str):
        import llguidance

        self.tokenizer = tokenizer
        self.ll_tokenizer = _ll_tokenizer(tokenizer)
        self.grammar = grammar
        error = llguidance.LLMatcher.validate_grammar(grammar, self.ll_tokenizer)
        if error and not error.startswith("WARNING"):
            raise ValueError(f"the grammar does not compile: {error}")
        self.eos_token_id = self.ll_tokenizer.eos_token

    def new_row(self) -> RowState:
        return RowState(self)

    def logits_processor(self) -> GrammarLogitsProcessor:
        return GrammarLogitsProcessor(self)

    def accepts(self, text: str) -> bool:
        """Whether the text (in the tokenizer's own tokenization) is a complete sentence of the language."""
        row = self.new_row()
        ids = self.tokenizer(text, add_special_tokens=False).input_ids
        return all(row.consume(t) for t in ids) and row.matcher.is_accepting()


class RowState:
    """One row's grammar state."""

    def __init__(self, constraint: Constraint):
        import llguidance

        self.matcher = llguidance.LLMatcher(constraint.ll_tokenizer, constraint.grammar)

    def consume(self, token: int) -> bool:
        return self.matcher.consume_token(token)

    def forced_token(self) -> int | None:
        """The token to take where the grammar allows one text only: that text's own first token."""
        forced = self.matcher.compute_ff_tokens()
        return forced[0] if forced else None

    def stopped(self) -> bool:
        return self.matcher.is_stopped()

    def error(self) -> str:
        return self.matcher.get_error()


class GrammarLogitsProcessor(LogitsProcessor):
    """Masks each row's logits to its grammar state; one processor per `generate` call."""

    def __init__(self, constraint: Constraint):
        import llguidance

        self.constraint = constraint
        self.rows: list[RowState] | None = None
        self.done: list[bool] = []
        self.width = (constraint.ll_tokenizer.vocab_size + 31) // 32
        self.executor = _executor()
        self.llguidance = llguidance

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        batch = scores.shape[0]
        eos = self.constraint.eos_token_id
        if self.rows is None:  # the first step: the prompts are in input_ids, nothing generated yet
            self.rows = [self.constraint.new_row() for _ in range(batch)]
            self.done = [False] * batch
        else:
            for i, token in enumerate(input_ids[:, -1].tolist()):
                if self.done[i]:
                    continue
                if token == eos or self.rows[i].stopped():
                    self.done[i] = True
                elif not self.rows[i].consume(token):
                    raise RuntimeError(f"row {i} left its grammar at token {token}: {self.rows[i].error()}")
        bitmask = np.zeros((batch, self.width), dtype=np.int32)
        live, forced = [], {}
        for i, row in enumerate(self.rows):
            if self.done[i]:
                continue
            token = row.forced_token()
            if token is None:
                live.append((row.matcher, i))
            else:
                forced[i] = token
        if live:
            self.executor.unsafe_compute_mask_ptr(live, bitmask.ctypes.data, self.width * 4, batch)
        allowed = _unpack(bitmask, scores.shape[1])
        for i in range(batch):
            if self.done[i] or i in forced:
                allowed[i] = False
                allowed[i, forced.get(i, eos)] = True
        return scores.masked_fill(~allowed.to(scores.device), float("-inf"))


def _unpack(bitmask: np.ndarray, vocab: int) -> torch.Tensor:
    """(rows, words) of 32 bits, bit j of word k for token 32k + j, as (rows, vocab) booleans."""
    bits = np.unpackbits(bitmask.view(np.uint8), axis=1, bitorder="little").astype(bool)
    if bits.shape[1] < vocab:  # logits wider than the tokenizer (a padded head): those ids are never allowed
        bits = np.pad(bits, ((0, 0), (0, vocab - bits.shape[1])))
    return torch.from_numpy(bits[:, :vocab].copy())


@lru_cache(maxsize=1)
def _executor():
    import llguidance

    return llguidance.LLExecutor()


_LL_TOKENIZERS: dict[int, object] = {}


def _ll_tokenizer(tokenizer):
    """llguidance's view of a fast tokenizer (about a second to build; kept per tokenizer)."""
    key = id(tokenizer)
    if key not in _LL_TOKENIZERS:
        import llguidance.hf

        _LL_TOKENIZERS[key] = (llguidance.hf.from_tokenizer(tokenizer), tokenizer)
    return _LL_TOKENIZERS[key][0]


def json_schema_constraint(tokenizer, schema: dict) -> Constraint:
    """Any JSON schema llguidance supports, written compactly: `plan_json`'s separators, no other whitespace."""
    import llguidance

    schema = {
        **schema,
        "x-guidance": {"whitespace_flexible": False, "item_separator": SEPARATORS[0], "key_separator": SEPARATORS[1]},
    }
    return Constraint(tokenizer, llguidance.LLMatcher.grammar_from_json_schema(json.dumps(schema)))


def regex_constraint(tokenizer, pattern: str) -> Constraint:
    """Texts that match the (Python-style, fully anchored) regex."""
    import llguidance

    return Constraint(tokenizer, llguidance.LLMatcher.grammar_from_regex(pattern))
