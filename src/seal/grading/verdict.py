"""A local verdict that agrees with the paper's GPT-4.1 judge, with no network and no API key.

The judge says yes when the student's answer gives the reference answer or an equivalent,
extra detail allowed, nothing contradicting it. We approximate it with lexical evidence
(normalised containment, recall of the gold answer's content words after light stemming,
numbers read as digits or words, how much of the gold answer the question already gave
away, answer length and trailing junk, hedges) combined by a logistic regression fitted on
judged answers (`fit`, weights shipped in verdict_weights.json). Deterministic and fast:
tens of thousands of verdicts per second.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass
from difflib import SequenceMatcher
from functools import lru_cache
from pathlib import Path

from seal.grading.metrics import normalize, token_f1

WEIGHTS_FILE = Path(__file__).with_name("verdict_weights.json")

_UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50,
    "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "thousand": 1000,
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8,
    "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12, "thirteenth": 13, "fourteenth": 14, "fifteenth": 15,
    "sixteenth": 16, "seventeenth": 17, "eighteenth": 18, "nineteenth": 19, "twentieth": 20, "twenty-first": 21,
    "thirtieth": 30, "fortieth": 40, "fiftieth": 50, "hundredth": 100, "once": 1, "twice": 2, "half": 0.5, "dozen": 12,
}  # fmt: skip
_UNIT_ALIASES = {
    "percent": "%", "per cent": "%", "km": "kilometres", "kilometers": "kilometres", "mi": "miles",
    "kg": "kilograms", "lb": "pounds", "lbs": "pounds", "ft": "feet", "m": "metres", "meters": "metres",
    "bce": "bc", "us": "united states", "usa": "united states", "uk": "united kingdom", "britain": "united kingdom",
}  # fmt: skip
_STOP = frozenset(
    "a an the of in on at to for by with from and or as is was were be been are its it this that these those "
    "which who whom whose what when where why how than then there their they he she his her him them our we "
    "you your i my me do does did not no around about approximately over nearly some roughly more less least most "
    "only just also all mostly mainly largely primarily generally usually often".split()
)
_HEDGES = ("i don't know", "i do not know", "not sure", "unknown", "no information", "cannot be determined",
           "not mentioned", "not specified", "unclear")  # fmt: skip
_MONTHS = frozenset("january february march april may june july august september october november december".split())
_JUNK = re.compile(r"\n\s*\n|\n\s*(?:Q:|Question:|Topic:|A:)", re.IGNORECASE)
_ORDINAL = re.compile(r"^(\d+)(?:st|nd|rd|th)$")
_DASHES = re.compile(r"[\u2010-\u2015\u2212-]")  # hyphens, en and em dashes, minus: "1918–1938" is two years
_DECIMAL = re.compile(r"(?<=\d)\.(?=\d)")
_DECIMAL_TOKEN = re.compile(r"^\d+(?:d\d+)+$")
_ROMAN = re.compile(r"\b(?=[IVXL]{2,}\b)L?X{0,3}(?:IX|IV|V?I{0,3})\b")  # upper case only: "Super Bowl XXXIII"
_ROMAN_VALUES = {"I": 1, "V": 5, "X": 10, "L": 50}
_TENS = {20, 30, 40, 50, 60, 70, 80, 90}
_ALTERNATIVES = re.compile(r"\bor\b|;|/")  # 'breast milk or colostrum' is right when either is given
_ITEMS = re.compile(r",|\band\b|\bor\b|;|/")  # of a list ('street vendors, washing cars'), the judge takes some


def main_answer(answer: str) -> str:
    """The answer proper: text before a blank line or a new 'Q:/Question:/Topic:' block the model ran into."""
    return _JUNK.split(answer.strip(), maxsplit=1)[0]


def _stem(word: str) -> str:
    for suffix in ("ingly", "edly", "ing", "ied", "ies", "ed", "es", "s", "ly"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)] + ("y" if suffix in ("ied", "ies") else "")
    return word


def _roman(match: re.Match) -> str:
    values = [_ROMAN_VALUES[c] for c in match.group()]
    return str(sum(-v if v < w else v for v, w in zip(values, values[1:] + [0])))


@lru_cache(maxsize=65536)
def canonical_tokens(text: str) -> tuple[str, ...]:
    """Normalised, stemmed tokens with numbers as digits and common units/aliases unified."""
    text = _ROMAN.sub(_roman, text)
    text = (
        unicodedata.normalize("NFKD", _DASHES.sub(" ", text.lower()).replace("æ", "ae"))
        .encode("ascii", "ignore")
        .decode()
    )
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text)  # 10,000 -> 10000
    text = _DECIMAL.sub("d", text)  # keep 3.5 apart from 35 through the punctuation stripping
    for alias, canon in _UNIT_ALIASES.items():
        text = re.sub(rf"\b{re.escape(alias)}\b", canon, text)
    out: list[str] = []
    for token in normalize(text).split():
        match = _ORDINAL.match(token)
        if match:
            token = match.group(1)
        elif token in _UNITS:
            token = str(_UNITS[token])
            if (
                out and out[-1].isdigit() and int(out[-1]) in _TENS and token.isdigit() and int(token) < 10
            ):  # twenty-five
                out[-1] = str(int(out[-1]) + int(token))
                continue
        out.append(_stem(token.replace("d", ".") if _DECIMAL_TOKEN.match(token) else token))
    return tuple(out)


def _soft_match(token: str, pool: set[str]) -> bool:
    """Equal, or sharing a long prefix (shrink/shrinking, diverge/divergence, Mongol/Mongols)."""
    if token in pool:
        return True
    if len(token) == 1 and token.isalpha():  # an initial: "Arthur H. Compton" / "Arthur Holly Compton"
        return any(other.startswith(token) for other in pool)
    if len(token) < 4:
        return False
    return any(len(other) >= 4 and (other.startswith(token[:5]) or token.startswith(other[:5])) for other in pool)


def _content(tokens: tuple[str, ...]) -> list[str]:
    return [t for t in tokens if t not in _STOP] or list(tokens)


def _parts(gold: str, separators: re.Pattern) -> list[str]:
    return [p for p in separators.split(gold) if p.strip()] or [gold]


def _months(tokens: tuple[str, ...]) -> set[str]:
    """Month names; 'may' only next to a number (the verb is far more common)."""

    def is_month(i: int, token: str) -> bool:
        if token != "may":
            return token in _MONTHS
        return any(0 <= j < len(tokens) and tokens[j].isdigit() for j in (i - 1, i + 1))

    return {t for i, t in enumerate(tokens) if is_month(i, t)}


def _numbers(tokens: tuple[str, ...]) -> set[str]:
    return {t for t in tokens if t.replace(".", "", 1).isdigit()}


def _numbers_recall(gold: set[str], answer: set[str]) -> float:
    """Share of the gold numbers the answer gives, up to 2% (170 billion for 170.4 billion; 1508 for 9 March 1508)."""
    if not gold:
        return 0.0
    values = [float(a) for a in answer]
    return sum(any(abs(float(g) - v) <= 0.02 * max(abs(float(g)), 1e-9) for v in values) for g in gold) / len(gold)


FEATURES = (
    "contains", "contains_main", "recall", "recall_novel", "recall_main", "f1_main", "longest_common",
    "gold_in_question", "empty", "log_answer_tokens", "log_gold_tokens", "numbers_match", "numbers_conflict",
    "junk", "hedge", "starts_with_gold", "soft_recall_main", "soft_recall_novel", "best_alternative",
    "recall_first_sentence", "numbers_recall", "month_conflict", "best_list_item",
)  # fmt: skip


def features(question: str, gold: str, answer: str) -> list[float]:
    main = main_answer(answer)
    gold_norm, main_norm, full_norm = normalize(gold), normalize(main), normalize(answer)
    gold_t, main_t, full_t, question_t = (canonical_tokens(x) for x in (gold, main, answer, question))
    content = _content(gold_t)
    novel = [t for t in content if t not in question_t] or content
    main_set, full_set = set(main_t), set(full_t)

    def recall(tokens: list[str], pool: set[str]) -> float:
        return sum(t in pool for t in tokens) / len(tokens) if tokens else 0.0

    def best_part(separators: re.Pattern) -> float:
        return max(recall(_content(canonical_tokens(part)), main_set) for part in _parts(gold, separators))

    def soft_recall(tokens: list[str], pool: set[str]) -> float:
        return sum(_soft_match(t, pool) for t in tokens) / len(tokens) if tokens else 0.0

    gold_numbers, main_numbers = _numbers(gold_t), _numbers(main_t)
    gold_months, main_months = _months(gold_t), _months(main_t)
    longest = 0.0
    if gold_norm and main_norm:
        match = SequenceMatcher(None, gold_norm, main_norm, autojunk=False).find_longest_match()
        longest = match.size / len(gold_norm)
    return [
        float(bool(gold_norm) and gold_norm in full_norm),
        float(bool(gold_norm) and gold_norm in main_norm),
        recall(content, full_set),
        recall(novel, main_set),
        recall(content, main_set),
        token_f1(gold, main),
        longest,
        recall(content, set(question_t)),
        float(not main_norm),
        math.log1p(len(main_t)),
        math.log1p(len(gold_t)),
        float(bool(gold_numbers) and gold_numbers <= main_numbers),
        float(bool(gold_numbers) and bool(main_numbers) and not gold_numbers & main_numbers),
        float(main.strip() != answer.strip()),
        float(any(h in main.lower() for h in _HEDGES)),
        float(bool(gold_norm) and main_norm.startswith(gold_norm)),
        soft_recall(content, main_set),
        soft_recall(novel, main_set),
        best_part(_ALTERNATIVES),
        recall(content, set(canonical_tokens(re.split(r"(?<=[.!?])\s", main.strip(), maxsplit=1)[0]))),
        _numbers_recall(gold_numbers, main_numbers),
        float(bool(gold_months) and bool(main_months) and not gold_months & main_months),
        best_part(_ITEMS),
    ]


@dataclass(frozen=True)
class VerdictModel:
    weights: tuple[float, ...]
    bias: float
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    threshold: float = 0.5

    def probability(self, question: str, gold: str, answer: str) -> float:
        x = features(question, gold, answer)
        z = self.bias + sum(w * (v - m) / s for w, v, m, s in zip(self.weights, x, self.mean, self.scale))
        return 1.0 / (1.0 + math.exp(-z))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"features": FEATURES, **self.__dict__}, indent=1))

    @classmethod
    def load(cls, path: str | Path = WEIGHTS_FILE) -> VerdictModel:
        data = json.loads(Path(path).read_text())
        if tuple(data.pop("features")) != FEATURES:
            raise ValueError(f"{path}: fitted for other features; refit with seal grade-check --fit")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def fit(rows, l2: float = 10.0, iterations: int = 50) -> VerdictModel:
    """Logistic regression by Newton's method on standardised features (deterministic); the L2
    strength was chosen by 5-fold cross-validation by passage on the calibration rows (flat
    from 0.3 to 100)."""
    import numpy as np

    x = np.array([features(r.question, r.gold, r.answer) for r in rows])
    y = np.array([float(r.verdict) for r in rows])
    mean, scale = x.mean(0), x.std(0)
    scale[scale == 0] = 1.0
    z = np.hstack([np.ones((len(x), 1)), (x - mean) / scale])
    w = np.zeros(z.shape[1])
    penalty = l2 * np.eye(z.shape[1])
    penalty[0, 0] = 0.0
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-z @ w))
        gradient = z.T @ (p - y) + penalty @ w
        hessian = (z * (p * (1 - p))[:, None]).T @ z + penalty
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return VerdictModel(tuple(w[1:].tolist()), float(w[0]), tuple(mean.tolist()), tuple(scale.tolist()))


@lru_cache(maxsize=1)
def _default_model() -> VerdictModel:
    return VerdictModel.load()


def verdict_probability(question: str, gold: str, answer: str) -> float:
    """The probability that the paper's judge would call `answer` to `question` correct, given the `gold` answer."""
    return _default_model().probability(question, gold, answer)


def verdict(question: str, gold: str, answer: str) -> float:
    """1.0 when the paper's judge would most likely call `answer` to `question` correct given `gold`, else 0.0.
    The question counts: how much of the gold answer it already gives away is a feature."""
    model = _default_model()
    return float(model.probability(question, gold, answer) >= model.threshold)
