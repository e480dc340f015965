"""SQuAD-style answer metrics: normalised exact match and token F1."""

from __future__ import annotations

import re
import string
from collections import Counter

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation) | {"‘", "’", "“", "”", "–", "—"}


def normalize(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(gold: str, answer: str) -> float:
    return float(normalize(gold) == normalize(answer))


def token_f1(gold: str, answer: str) -> float:
    gold_tokens, answer_tokens = normalize(gold).split(), normalize(answer).split()
    if not gold_tokens or not answer_tokens:
        return float(gold_tokens == answer_tokens)
    common = sum((Counter(gold_tokens) & Counter(answer_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(answer_tokens), common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def contains(gold: str, answer: str) -> float:
    """1.0 when the normalised gold answer stands within the normalised answer."""
    g = normalize(gold)
    return float(bool(g) and g in normalize(answer))
