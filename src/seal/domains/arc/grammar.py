"""The ARC self-edit's language: its JSON schema (exactly the rules `parse_self_edit` checks) and the
bounded regex that constrained sampling uses (`seal.engine.structured.regex_constraint`).

The regex keeps `plan_json`'s key order and separators (", ", ": ", no other whitespace), and a
learning rate with at most 3 significant digits, at most 6 powers of ten below max_lr's, in decimal
("0.0003") or exponent form ("3e-4", "2.5e-05"). A JSON-schema number has no length bound (a model
can write "0.0000000000..." until its tokens run out), and outlines-core and lm-format-enforcer
ignore a number's range, llguidance 1.9 lets a literal 0 through an exclusiveMinimum of 0: the regex
is exact and bounded instead, at the cost of learning rates below max_lr / 10^6 and of a fourth
significant digit; it also refuses 2.0 epochs, which JSON schema's "integer" takes and
parse_self_edit does not. With the embedded tokenizer a self-edit is 82-85 tokens from the embedded
model and 82-91 from a randomly initialised one (the paper gives a self-edit 128 new tokens).
"""

from __future__ import annotations

import json
from decimal import Decimal

from seal.domains.arc.selfedit import SETTINGS, STRATEGIES, SWITCHES

SIGNIFICANT_DIGITS = 3  # a sampled learning rate has at most this many significant digits
LR_DECADES = 6  # and is at least max_lr's power of ten / 10^LR_DECADES
SEPARATORS = (", ", ": ")  # json.dumps' own, as plan_json writes them


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
    """The digit strings of len(bound) digits, the first not 0, that are <= bound: per alternative, one regex
    per digit."""
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
