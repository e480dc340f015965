"""Knowledge incorporation: a passage is the context, closed-book questions about it are the probes.

Implements the domain functions the loop uses: read contexts, write the self-edit prompt,
turn a self-edit into training documents (the plan), and build the probe prompts.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from seal.datasets import locate
from seal.errors import DataError
from seal.models import LoadedModel


@dataclass(frozen=True)
class Question:
    """A closed-book question about a passage and its gold answer."""

    question: str
    answer: str


@dataclass
class Passage:
    """A context of the knowledge domain: a titled passage, its questions, and optionally self-edits
    written for it elsewhere."""

    title: str
    context: str
    questions: list[Question]
    completions: list[str] | None = None  # self-edits written elsewhere (synthetic-data files)
    source_index: int = 0  # position in its file, a stable id across subsets

    @property
    def key(self) -> str:
        return f"p{self.source_index}"


# --- data ----------------------------------------------------------------------------------------


def _require_str(record: dict, name: str, where: str, allow_empty: bool = False) -> str:
    if name not in record:
        raise DataError(f"{where}: missing field '{name}'")
    value = record[name]
    if not isinstance(value, str):
        raise DataError(f"{where}: field '{name}' must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise DataError(f"{where}: field '{name}' is empty")
    return value


def parse_passage(record: object, where: str, index: int) -> Passage:
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected an object with title, context, questions")
    title = _require_str(record, "title", where)
    context = _require_str(record, "context", where)
    if "questions" not in record:
        raise DataError(f"{where}: missing field 'questions'")
    raw_questions = record["questions"]
    if not isinstance(raw_questions, list):
        raise DataError(f"{where}: field 'questions' must be a list")
    questions = []
    for qi, q in enumerate(raw_questions):
        q_where = f"{where}: questions[{qi}]"
        if not isinstance(q, dict):
            raise DataError(f"{q_where}: expected an object with question and answer")
        questions.append(Question(_require_str(q, "question", q_where), _require_str(q, "answer", q_where)))
    completions = None
    if "completions" in record:
        completions = record["completions"]
        if not isinstance(completions, list) or not all(isinstance(c, str) for c in completions):
            raise DataError(f"{where}: field 'completions' must be a list of strings")
    return Passage(title, context, questions, completions, index)


def read_passage_list(path: Path, missing: str = "no such file") -> list:
    """The JSON list a passage file holds, unchecked inside; a missing file, invalid JSON or another
    top-level value is one `DataError` naming the file (`missing`: what to say of a missing one)."""
    if not path.exists():
        raise DataError(f"{path}: {missing}")
    try:
        records = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON list of passages")
    return records


def load_passages(path: str | Path) -> list[Passage]:
    """Passages in the SEAL format: a JSON list of {title, context, questions: [{question, answer}]},
    optionally with `completions` (self-edits written elsewhere). `path` may name a data set's file
    (`squad:squad_val.json`, see `seal.datasets`)."""
    path = locate(path)
    records = read_passage_list(path)
    if not records:
        raise DataError(f"{path}: holds no passages")
    return [parse_passage(r, f"{path}: record {i}", i) for i, r in enumerate(records)]


def paper_subset(passages: list[Passage], n: int | None, seed: int = 42) -> list[Passage]:
    """The paper's evaluation subset: the first n after `random.seed(42); random.shuffle`."""
    shuffled = list(passages)
    random.Random(seed).shuffle(shuffled)
    return shuffled if n is None else shuffled[:n]


# --- self-edit prompts -----------------------------------------------------------------------------

_PASSAGE = "Passage:\n{title}\n{context}\n\n"
PROBES = "probes"

PROMPTS: dict[str, str] = {
    "implications": (
        "Read the passage below and write a list of implications: statements that follow from it, "
        "directly or indirectly.\n\n" + _PASSAGE + "Implications:\n"
    ),
    "implications-long": (
        "Read the passage below and write a long list of implications. Each one should be a full, "
        "self-contained statement of a fact or consequence, directly or indirectly drawn from the passage.\n\n"
        + _PASSAGE
        + "Implications:\n"
    ),
    "implications-very-long": (
        "Read the passage below and write a very long and thorough list of implications. Restate every fact, "
        "name, number and date it contains, and every consequence that can be drawn from them, one per line, "
        "each a full sentence that makes sense on its own.\n\n" + _PASSAGE + "Implications:\n"
    ),
    "rewrite": (
        "Read the passage below and rewrite it in several different ways, keeping every fact, name, number "
        "and date. Put each rewrite on its own line.\n\n" + _PASSAGE + "Rewrites:\n"
    ),
    "self-qa": (
        "Read the passage below and write questions that test knowledge of it, each followed by its answer, "
        "in the form:\nQuestion: ...\nAnswer: ...\n\n" + _PASSAGE + "Questions and answers:\n"
    ),
    # The probes variant: the policy writes only questions; the model with the passage in its prompt answers
    # each of them afterwards (`probe_answer_prompt`), and the pairs are the self-edit (`probes_self_edit`).
    PROBES: (
        "Read the passage below and write questions that someone who has read it could answer and someone "
        "who has not could not: one question per line, about every name, number, date and event in it.\n\n"
        + _PASSAGE
        + "Questions:\n"
    ),
}
VARIANTS = tuple(PROMPTS)

# For a pretrained (base) model, no instruction: text it continues into the self-edit. The passage first,
# then the start of what should follow it, so the model's next line is already a line of the self-edit.
_DOCUMENT = "{title}\n{context}\n\n"
COMPLETION_PROMPTS: dict[str, str] = {
    "implications": _DOCUMENT + "What follows from the text above, one statement per line:\n- ",
    "implications-long": _DOCUMENT
    + "Every fact and consequence of the text above, each a full sentence on its own line:\n- ",
    "implications-very-long": _DOCUMENT
    + "Every fact, name, number and date of the text above, and what follows from them, "
    "one full sentence per line:\n- ",
    "rewrite": _DOCUMENT + "The same text, said again in other words:\n",
    "self-qa": _DOCUMENT + "Questions about the text above, with their answers:\nQuestion: ",
    PROBES: _DOCUMENT + "Questions a reader of the text above can answer, one per line:\n1.",
}


def check_variant(variant: str) -> None:
    if variant not in PROMPTS:
        raise ValueError(f"unknown self-edit variant {variant!r}; choose from {', '.join(VARIANTS)}")


def self_edit_prompt(passage: Passage, variant: str, chat: bool = True) -> str:
    """The prompt that asks for a self-edit of `passage` (unformatted: `LoadedModel.format_prompt` wraps it).

    Args:
        passage: the context.
        variant: one of `VARIANTS` (implications, implications-long, rewrite, self-qa, ...).
        chat: an instruction for a chat model (`LoadedModel.chat`), else text a pretrained model continues.
    """
    check_variant(variant)
    return (PROMPTS if chat else COMPLETION_PROMPTS)[variant].format(title=passage.title, context=passage.context)


# --- self-edit -> plan -----------------------------------------------------------------------------

_HEADER = re.compile(r"^[#*\s]*[^.!?]{0,80}:[*\s]*$")  # "**Implications:**", "Here are some rewrites:"
_QA_START = re.compile(r"^\s*(?:\*\*)?\s*(?:Q(?:uestion)?\s*\d*\s*[:.)])", re.IGNORECASE)


@dataclass
class Plan:
    documents: list[str]
    self_edit_documents: int  # how many came from the self-edit, first (the rest is the passage)
    notes: list[str] = field(default_factory=list)
    teacher_context: str = ""  # what a distillation teacher reads before each self-edit document: the passage


def _self_edit_lines(text: str) -> list[str]:
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    # The preamble is any header lines before the first content line.
    while lines and _HEADER.match(lines[0]):
        lines.pop(0)
    return [line for line in lines if not _HEADER.match(line)]


def _qa_blocks(text: str) -> list[str]:
    blocks: list[list[str]] = []
    for line in _self_edit_lines(text):
        if _QA_START.match(line) or not blocks:
            blocks.append([line])
        else:
            blocks[-1].append(line)
    return ["\n".join(block) for block in blocks]


def plan(passage: Passage, self_edit: str, variant: str = "implications", split_lines: bool = True) -> Plan:
    """A self-edit turned into training documents, by the paper's rule: one document per self-edit
    line (per Q&A pair for self-QA), each prefixed with the title, and the passage itself appended
    as a last document.

    Args:
        passage: the context the self-edit was written for.
        self_edit: the text the policy wrote ("" for the passage-only condition).
        variant: the prompt it was written with (self-qa and probes keep question and answer together).
        split_lines: false keeps the self-edit whole as one document.
    Returns:
        the plan: its documents, how many came from the self-edit, and notes on what was dropped.
    """
    notes = []
    if not split_lines:
        units = [self_edit.strip()] if self_edit.strip() else []
    elif variant in ("self-qa", PROBES):
        units = _qa_blocks(self_edit)
    else:
        units = _self_edit_lines(self_edit)
    if not units and self_edit.strip():
        notes.append("self-edit had no usable lines")
    documents = [f"{passage.title}\n{unit}" for unit in units]
    documents.append(f"{passage.title}\n{passage.context}")
    return Plan(documents, len(units), notes, _DOCUMENT.format(title=passage.title, context=passage.context))


# --- probes ----------------------------------------------------------------------------------------

ANSWER_PROMPT = (
    "Answer the question about the topic below with a short answer.\nTopic: {title}\nQuestion: {question}\nAnswer:"
)
IN_CONTEXT_PROMPT = (
    "Read the passage and answer the question with a short answer.\nTopic: {title}\nPassage: {context}\n"
    "Question: {question}\nAnswer:"
)


def answer_prompt(lm: LoadedModel, passage: Passage, question: Question, in_context: bool = False) -> str:
    template = IN_CONTEXT_PROMPT if in_context else ANSWER_PROMPT
    text = template.format(title=passage.title, context=passage.context, question=question.question)
    return lm.format_prompt(text)


def gold_continuation(lm: LoadedModel, question: Question) -> str:
    """The gold answer as the model would write it after the prompt (a leading space after 'Answer:')."""
    return question.answer if lm.chat else " " + question.answer


# --- probes: questions answered with the passage in context ---------------------------------------

_QUESTION_PREFIX = re.compile(r"^\s*(?:[-*•]|\d+\s*[.):]|Q(?:uestion)?\s*\d*\s*[:.)])?\s*", re.IGNORECASE)


def probe_questions(text: str) -> list[str]:
    """The questions a probes self-edit wrote: each line's text up to its first question mark (numbering and
    bullets dropped), lines without one left out, each question once."""
    questions: dict[str, str] = {}
    for line in text.splitlines():
        body = _QUESTION_PREFIX.sub("", line.replace("*", ""), count=1)
        if "?" in body and body.index("?") > 0:
            question = body[: body.index("?") + 1].strip()
            questions.setdefault(" ".join(question.lower().split()), question)
    return list(questions.values())


def probe_answer_prompt(lm: LoadedModel, passage: Passage, question: str) -> str:
    """The prompt the in-context model answers a probe from: the passage, then the question (as the
    in-context condition answers the gold questions)."""
    return answer_prompt(lm, passage, Question(question, ""), in_context=True)


def probes_self_edit(questions: list[str], answers: list[str]) -> str:
    """Questions and their in-context answers as a self-edit, one Question/Answer pair per block (an
    unanswered question is left out)."""
    return "\n".join(f"Question: {q}\nAnswer: {a.strip()}" for q, a in zip(questions, answers) if a.strip())


# --- a self-supervised reward: questions and references the frozen model wrote with the passage in view --
