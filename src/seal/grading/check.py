"""Measure a grader against judged answers: agreement, precision, recall, Cohen's kappa, confusion."""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from seal.domains.knowledge import DataError


@dataclass(frozen=True)
class Judged:
    question: str
    gold: str
    answer: str
    verdict: bool  # the reference judge's verdict
    group: str  # answers of the same passage share a group, so splits never separate them


def load_judged(path: str | Path) -> list[Judged]:
    """Judged answers from a SEAL evaluation result (`articles[].completions[].questions[]` with
    baseline/adapter answers and `*_correct` verdicts) or a JSONL of {question, gold, answer, verdict}."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    text = path.read_text()
    try:
        if path.suffix == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
            return [
                Judged(r["question"], r["gold"], r["answer"], bool(r["verdict"]), str(r.get("group", i)))
                for i, r in enumerate(rows)
            ]
        data = json.loads(text)
        out = []
        for article in data["articles"]:
            for completion in article["completions"]:
                for q in completion["questions"]:
                    for side in ("baseline", "adapter"):
                        out.append(
                            Judged(q["question"], q["answer"], q[f"{side}_answer"], bool(q[f"{side}_correct"]), article["title"] + article["context"][:40])
                        )
        return out
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    except (KeyError, TypeError) as err:
        raise DataError(f"{path}: not a judged-answers file (missing {err})") from None


def split(rows: list[Judged], held_out: float = 0.3) -> tuple[list[Judged], list[Judged]]:
    """A fixed split by passage: the same rows are held out on every machine and every run."""
    def is_held_out(row: Judged) -> bool:
        return zlib.crc32(row.group.encode()) % 1000 < held_out * 1000

    return [r for r in rows if not is_held_out(r)], [r for r in rows if is_held_out(r)]


@dataclass
class Agreement:
    n: int
    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def accuracy(self) -> float:
        return (self.tp + self.tn) / self.n if self.n else float("nan")

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else float("nan")

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")

    @property
    def kappa(self) -> float:
        p_yes = ((self.tp + self.fp) / self.n) * ((self.tp + self.fn) / self.n)
        p_no = ((self.fn + self.tn) / self.n) * ((self.fp + self.tn) / self.n)
        expected = p_yes + p_no
        return (self.accuracy - expected) / (1 - expected) if expected < 1 else float("nan")

    def as_dict(self) -> dict:
        return {
            "n": self.n, "agreement": self.accuracy, "precision": self.precision, "recall": self.recall,
            "kappa": self.kappa, "confusion": {"tp": self.tp, "fp": self.fp, "fn": self.fn, "tn": self.tn},
        }  # fmt: skip


def agreement(rows: list[Judged], grader: Callable[[str, str, str], bool]) -> tuple[Agreement, list[tuple[Judged, bool]]]:
    """How often `grader(question, gold, answer)` agrees with the rows' verdicts; also the disagreements."""
    counts = Agreement(len(rows), 0, 0, 0, 0)
    disagreements = []
    for row in rows:
        said = bool(grader(row.question, row.gold, row.answer))
        if said and row.verdict:
            counts.tp += 1
        elif said:
            counts.fp += 1
        elif row.verdict:
            counts.fn += 1
        else:
            counts.tn += 1
        if said != row.verdict:
            disagreements.append((row, said))
    return counts, disagreements
