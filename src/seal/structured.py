"""Grammar-constrained sampling: every sampled text is in a given language (a JSON schema, a regex).

    constraint = arc_self_edit_constraint(lm.tokenizer, max_lr=1e-2, max_epochs=10)
    texts = generate(lm, prompts, max_new_tokens=128, temperature=1.0, constraint=constraint)
    # every text parses: parse_self_edit(text).valid

A `Constraint` is compiled once per tokenizer and language; `generate` asks it for a fresh
`logits_processor()` per batch, which keeps one grammar state per row (left-padded rows,
greedy or sampled, the chat template or not). At each step the processor masks the tokens
that would leave the language; where the grammar allows only one continuation (the keys of a
JSON object, say) it allows only the first token of that text's own tokenization, so forced
text costs as many tokens as it does when written by hand (llguidance's mask does so by itself;
xgrammar's, outlines-core's and lm-format-enforcer's also allow "{" then '"' where the text is
'{"', up to a token per character); once a row's text is complete it allows only the
end-of-sequence token. The grammar engine is llguidance (a Rust wheel with no
Python dependencies; see bench/structured.py for the comparison with xgrammar, outlines and
lm-format-enforcer).

The ARC self-edit (`seal.domains.arc.selfedit`) has two descriptions here:

- `arc_self_edit_schema(max_lr, max_epochs)`: its JSON schema, exactly the rules
  `parse_self_edit` checks (nested as `plan_json` writes it);
- `arc_self_edit_regex(max_lr, max_epochs)`: the language that is sampled, a subset of that
  schema: keys in `plan_json`'s order with its separators (", ", ": ", no other whitespace),
  and a learning rate with at most 3 significant digits, at most 6 powers of ten below
  max_lr's, in decimal ("0.0003") or exponent form ("3e-4", "2.5e-05"). A JSON-schema number
  has no length bound (a model can write "0.0000000000..." until its tokens run out);
  outlines-core and lm-format-enforcer ignore a number's range, and llguidance 1.9 lets a
  literal 0 through an exclusiveMinimum of 0. The regex is exact and bounded instead, at the
  cost of learning rates below max_lr / 10^6 and of a fourth significant digit; it also
  refuses 2.0 epochs, which JSON schema's "integer" takes and parse_self_edit does not.

With the embedded tokenizer a self-edit is 82-85 tokens from the embedded model and 82-91 from a
randomly initialised one (the paper gives a self-edit 128 new tokens).
"""

from __future__ import annotations

import json
from decimal import Decimal
from functools import lru_cache

import numpy as np
import torch
from transformers import LogitsProcessor

from seal.domains.arc.selfedit import SETTINGS, STRATEGIES, SWITCHES

SIGNIFICANT_DIGITS = 3  # a sampled learning rate has at most this many significant digits
LR_DECADES = 6  # and is at least max_lr's power of ten / 10^LR_DECADES
SEPARATORS = (", ", ": ")  # json.dumps' own, as plan_json writes them


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

    schema = {**schema, "x-guidance": {"whitespace_flexible": False, "item_separator": SEPARATORS[0], "key_separator": SEPARATORS[1]}}
    return Constraint(tokenizer, llguidance.LLMatcher.grammar_from_json_schema(json.dumps(schema)))


def regex_constraint(tokenizer, pattern: str) -> Constraint:
    """Texts that match the (Python-style, fully anchored) regex."""
    import llguidance

    return Constraint(tokenizer, llguidance.LLMatcher.grammar_from_regex(pattern))


def arc_self_edit_constraint(tokenizer, max_lr: float = 1e-2, max_epochs: int = 10) -> Constraint:
    """ARC self-edits that `parse_self_edit(text, max_lr, max_epochs)` accepts, in a bounded number of tokens."""
    return regex_constraint(tokenizer, arc_self_edit_regex(max_lr, max_epochs))


# ---------------------------------------------------------------------------------------------
# The ARC self-edit: its JSON schema (the parse rules) and the bounded language that is sampled


def arc_self_edit_schema(max_lr: float = 1e-2, max_epochs: int = 10) -> dict:
    """The ARC self-edit's JSON schema (draft 2020-12), nested as `plan_json` writes it."""

    def obj(properties: dict) -> dict:
        return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}

    return obj({
        "data_generation": obj({key: {"type": "boolean"} for key in SWITCHES}),
        "training": obj({
            "strategy": {"type": "string", "enum": list(STRATEGIES)},
            "learning_rate": {"type": "number", "exclusiveMinimum": 0, "maximum": max_lr},
            "num_train_epochs": {"type": "integer", "minimum": 1, "maximum": max_epochs},
        }),
    })  # fmt: skip


def arc_self_edit_regex(max_lr: float = 1e-2, max_epochs: int = 10) -> str:
    """The sampled self-edits: `plan_json`'s shape and separators, a bounded learning rate (see the module doc)."""
    item, key = (_literal(s) for s in SEPARATORS)

    def obj(fields: list[tuple[str, str]]) -> str:
        return r"\{" + item.join(_literal(json.dumps(k)) + key + v for k, v in fields) + r"\}"

    assert SETTINGS == ("strategy", "learning_rate", "num_train_epochs")
    return obj([
        ("data_generation", obj([(k, "(?:true|false)") for k in SWITCHES])),
        ("training", obj([
            ("strategy", "(?:" + "|".join(_literal(json.dumps(s)) for s in STRATEGIES) + ")"),
            ("learning_rate", positive_number_regex(max_lr)),
            ("num_train_epochs", integer_range_regex(max_epochs)),
        ])),
    ])  # fmt: skip


def _literal(text: str) -> str:
    return "".join("\\" + c if c in r"\.^$|?*+()[]{}/" else c for c in text)


def _at_most(bound: str) -> list[list[str]]:
    """The digit strings of len(bound) digits, the first not 0, that are <= bound: per alternative, one regex per digit."""
    n, alternatives = len(bound), []
    for i, digit in enumerate(bound):
        low, high = (1 if i == 0 else 0), int(digit) - 1
        if high >= low:
            one = str(low) if high == low else f"[{low}-{high}]"
            alternatives.append([*bound[:i], one, *["[0-9]"] * (n - i - 1)])
    alternatives.append(list(bound))
    return alternatives


def _any_digits(n: int) -> list[list[str]]:
    return [["[1-9]", *["[0-9]"] * (n - 1)]]


def _significand(value: float, digits: int) -> tuple[str, int]:
    """The value's first `digits` significant digits (cut, never rounded up) and its power of ten."""
    _, ds, exp = Decimal(repr(float(value))).normalize().as_tuple()
    return ("".join(map(str, ds)) + "0" * digits)[:digits], exp + len(ds) - 1


def positive_number_regex(max_value: float, digits: int = SIGNIFICANT_DIGITS, decades: int = LR_DECADES) -> str:
    """JSON numbers in (0, max_value], with at most `digits` significant digits and at least
    10^(e - decades) where max_value = m x 10^e: "0.0003", "3e-4", "3e-04", "2.5e-05", "1.25".

    At max_value's own power of ten the significand is compared digit by digit with
    max_value's digits (cut to `digits`, never rounded up), so the decimal value is <=
    max_value's, and since rounding to the nearest float keeps order, so is the float Python
    reads. Every match is at most `digits` + 3 + the decimal zeros long."""
    if not max_value > 0:
        raise ValueError(f"max_value must be > 0, got {max_value}")
    top, e_max = _significand(max_value, digits)
    alternatives = []
    for e in range(e_max, e_max - decades - 1, -1):
        exponent = (f"-0?{-e}" if -e < 10 else f"-{-e}") if e < 0 else rf"\+?{e}"
        for n in range(1, digits + 1):
            for pos in _at_most(top[:n]) if e == e_max else _any_digits(n):
                alternatives.append(pos[0] + (r"\." + "".join(pos[1:]) if n > 1 else "") + "e" + exponent)
                if e < 0:
                    alternatives.append(r"0\." + "0" * (-e - 1) + "".join(pos))
                elif n <= e + 1:  # an integer: the digits then zeros
                    alternatives.append("".join(pos) + "0" * (e + 1 - n))
                else:
                    alternatives.append("".join(pos[: e + 1]) + r"\." + "".join(pos[e + 1 :]))
    return "(?:" + "|".join(alternatives) + ")"


def integer_range_regex(high: int) -> str:
    """The integers 1..high as JSON writes them (no leading zeros)."""
    if high < 1:
        raise ValueError(f"high must be >= 1, got {high}")
    text = str(high)
    alternatives = ["".join(pos) for pos in _at_most(text)]
    alternatives += ["[1-9]" + "[0-9]" * (k - 1) for k in range(len(text) - 1, 0, -1)]
    return "(?:" + "|".join(alternatives) + ")"
