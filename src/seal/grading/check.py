"""Measure a grader against judged answers: agreement, precision, recall, Cohen's kappa, confusion;
and gather judged answers to fit a grader on, none of them from the held-out part."""

from __future__ import annotations

import json
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from seal.config import JudgeConfig
from seal.datasets import locate
from seal.domains.knowledge import Passage
from seal.errors import DataError
from seal.grading.registry import answer_grader_names, text_graders
from seal.grading.verdict import fit


@dataclass(frozen=True)
class Judged:
    question: str
    gold: str
    answer: str
    verdict: bool  # the reference judge's verdict
    group: str  # answers of the same passage share a group, so splits never separate them

    def __post_init__(self) -> None:
        for name in ("question", "gold", "answer"):  # a null answer would reach the graders otherwise
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TypeError(f"a row's {name} is {type(value).__name__}, not text")


def _group(title: str, context: str) -> str:
    return title + context[:40]


def load_judged(path: str | Path, passages: list[Passage] | None = None) -> list[Judged]:
    """Judged answers from a SEAL evaluation result (`articles[].completions[].questions[]` with
    baseline/adapter answers and `*_correct` verdicts, e.g. eval/base.json or train/rank_iter0.json),
    a SEAL multi-passage (CPT) result (`server_reply` with `*_texts` and `*_correct`, one per
    question of the evaluated passages, in order: give those `passages`), or a JSONL of
    {question, gold, answer, verdict}. `path` may name a data set's file (`seal-results:eval/base.json`)."""
    path = locate(path)
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
        if "server_reply" in data:
            return _load_cpt(path, data["server_reply"], passages)
        out = []
        for article in data["articles"]:
            for completion in article["completions"]:
                for q in completion["questions"]:
                    for side in ("baseline", "adapter"):
                        out.append(
                            Judged(
                                q["question"],
                                q["answer"],
                                q[f"{side}_answer"],
                                bool(q[f"{side}_correct"]),
                                _group(article["title"], article["context"]),
                            )
                        )
        return out
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    except KeyError as err:
        raise DataError(f"{path}: not a judged-answers file (missing field {err})") from None
    except TypeError as err:
        raise DataError(
            f"{path}: not a judged-answers file "
            f"(neither a SEAL result nor JSONL rows of question, gold, answer, verdict: {err})"
        ) from None


def _load_cpt(path: Path, reply: dict, passages: list[Passage] | None) -> list[Judged]:
    if passages is None:
        raise DataError(
            f"{path}: a CPT result holds answers without their questions; give the evaluated passages (--passages)"
        )
    questions = [(p, q) for p in passages for q in p.questions]
    if len(questions) != len(reply["baseline_texts"]):
        raise DataError(
            f"{path}: {len(reply['baseline_texts'])} answers, but the passages given hold {len(questions)} questions"
        )
    return [
        Judged(
            q.question,
            q.answer,
            reply[f"{side}_texts"][i],
            bool(reply[f"{side}_correct"][i]),
            _group(p.title, p.context),
        )
        for i, (p, q) in enumerate(questions)
        for side in ("baseline", "adapter")
    ]


def split(rows: list[Judged], held_out: float = 0.3) -> tuple[list[Judged], list[Judged]]:
    """A fixed split by passage: the same rows are held out on every machine and every run."""

    def is_held_out(row: Judged) -> bool:
        return zlib.crc32(row.group.encode()) % 1000 < held_out * 1000

    return [r for r in rows if not is_held_out(r)], [r for r in rows if is_held_out(r)]


def calibration_rows(train: list[Judged], held_out: list[Judged], more: Iterable[Judged] = ()) -> list[Judged]:
    """Rows to fit a grader on: `train` and `more` (other judged files), leaving out every row of
    `more` from a held-out passage or asking a held-out question (the same question is judged
    again in other runs of the release, often on the very same answer). Repeats of a (question,
    gold, answer) become one row with the majority verdict (ties: the first one's)."""
    held_groups, held_questions = {r.group for r in held_out}, {r.question for r in held_out}
    kept: dict[tuple[str, str, str], list[Judged]] = {}
    for row in [*train, *(r for r in more if r.group not in held_groups and r.question not in held_questions)]:
        kept.setdefault((row.question, row.gold, row.answer.strip()), []).append(row)
    out = []
    for same in kept.values():
        votes = Counter(r.verdict for r in same)
        verdict = same[0].verdict if votes[True] == votes[False] else votes[True] > votes[False]
        out.append(Judged(same[0].question, same[0].gold, same[0].answer, verdict, same[0].group))
    return out


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


def agreement(
    rows: list[Judged], grader: Callable[[str, str, str], bool]
) -> tuple[Agreement, list[tuple[Judged, bool]]]:
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


@dataclass
class GradeCheck:
    """A grader measured against one file's reference verdicts."""

    grader: str
    part: str  # all | train | held-out
    agreement: Agreement
    disagreements: list[tuple[Judged, bool]]  # (row, what the grader said)
    fitted_on: int | None = None  # rows the verdict model was refitted on, when it was


PARTS = ("all", "train", "held-out")


def grade_check(
    path: str | Path,
    grader: str = "verdict",
    part: str = "held-out",
    *,
    judge: JudgeConfig | None = None,
    passages: list[Passage] | None = None,
    fit_to: str | Path | None = None,
    fit_with: Iterable[str | Path] = (),
) -> GradeCheck:
    """How well `grader` agrees with the verdicts of the judged answers in `path`.

    Args:
        path: judged answers (see `load_judged`).
        grader: a name from the registry (a score of 0.5 or more counts as "yes").
        part: which rows are measured: all, or the train / held-out part of a fixed split by passage.
        judge: the endpoint for `grader="judge"`.
        passages: the passages a CPT result evaluated, in order.
        fit_to: refit the verdict model on the train part (and `fit_with`), save it there, and measure it.
        fit_with: more judged files to fit on (their rows from held-out passages and questions left out).
    """
    fit_with = list(fit_with)
    if fit_with and fit_to is None:
        raise ValueError("--fit-with needs --fit")
    if part not in PARTS:
        raise ValueError(f"--part must be all, train or held-out, not {part!r}")
    if grader not in answer_grader_names():
        raise ValueError(f"unknown grader {grader!r}; choose from {', '.join(answer_grader_names())}")
    rows = load_judged(path, passages)
    more = [row for extra in fit_with for row in load_judged(extra, passages)]
    train, held_out = split(rows)
    chosen = {"all": rows, "train": train, "held-out": held_out}[part]
    grade, threshold = text_graders([grader], judge)[grader], 0.5
    fitted_on = None
    if fit_to is not None:
        calibration = calibration_rows(train, held_out, more)
        model = fit(calibration)
        model.save(fit_to)
        fitted_on = len(calibration)
        if grader == "verdict":  # measure the refitted model, at its own threshold
            grade, threshold = model.probability, model.threshold
    result, disagreements = agreement(chosen, lambda q, g, a: grade(q, g, a) >= threshold)
    return GradeCheck(grader, part, result, disagreements, fitted_on)
