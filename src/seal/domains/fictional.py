"""Fictional-knowledge passages: facts about invented people, towns, organisations and inventions.

No model can know these facts before reading the passage, so closed-book accuracy measures what a
model absorbed from it and nothing else. The output is the SEAL passage format
(`[{title, context, questions: [{question, answer}]}]`) that every seal command reads, with extra
fields `load_passages` ignores: each question's `fact` and `kind`, each passage's `entities`.

Every passage is about one main entity, named in its title, and states 4-6 facts linking it to a new
entity (a person, a town, a river, an organisation, an invention) or to a value (a year, a number).
Each question asks for the other side of one fact given the main entity, so an answer is never the
title. A question is `forward` when the sentence stating its fact starts from the main entity
("Zekan Lakir set up the Titam Society." / "What did Zekan Lakir set up?") and `reverse` when the
sentence starts from the answer ("The Titam Society was set up by Zekan Lakir."): answering it means
reading the fact from the other side, which fine-tuning on the passage teaches badly (the reversal
curse) while reading it in context is easy.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from seal.domains.fictional_blocked import BLOCKED
from seal.domains.knowledge import read_passage_list

Kind = Literal["person", "town", "organisation", "invention"]
KINDS: tuple[str, ...] = ("person", "town", "organisation", "invention")
ConfigT = TypeVar("ConfigT", bound=BaseModel)
MAX_PASSAGES = 1000  # each invented word is used once: the supply of names runs out past about 3000 passages


class FictionalConfigError(ValueError):
    """A generator config that cannot be used; the message names the field."""


# --- config ----------------------------------------------------------------------------------------


class FictionalConfig(BaseModel):
    """How many passages, from which seed, and their shape."""

    model_config = ConfigDict(extra="forbid")

    passages: int = Field(
        30, ge=1, le=MAX_PASSAGES, description="passages to generate (files excluded from each other count together)"
    )
    seed: int = Field(0, description="same seed (and exclusions) -> identical output")
    min_facts: int = Field(4, ge=1, description="facts stated per passage, at least")
    max_facts: int = Field(6, ge=1, description="facts stated per passage, at most")
    min_questions: int = Field(4, ge=1, description="questions per passage, at least (one per fact)")
    max_questions: int = Field(6, ge=1, description="questions per passage, at most")
    reverse_fraction: float = Field(
        0.25, ge=0.0, le=1.0, description="share of the file's questions asked from the other side of their fact"
    )
    kinds: list[Kind] = Field(default_factory=lambda: list(KINDS), description="kinds of main entity, in turn")

    @model_validator(mode="after")
    def _consistent(self) -> FictionalConfig:
        if self.min_facts > self.max_facts:
            raise ValueError(f"min_facts ({self.min_facts}) is more than max_facts ({self.max_facts})")
        if self.min_questions > self.max_questions:
            raise ValueError(f"min_questions ({self.min_questions}) is more than max_questions ({self.max_questions})")
        if self.min_questions > self.max_facts:
            raise ValueError(
                f"min_questions ({self.min_questions}) is more than max_facts ({self.max_facts}): "
                "each question asks about a fact of its own"
            )
        if not self.kinds:
            raise ValueError("kinds is empty; choose from " + ", ".join(KINDS))
        if len(set(self.kinds)) != len(self.kinds):
            raise ValueError("kinds lists a kind twice")
        for kind in self.kinds:
            available = len(answer_types(kind))
            if self.max_facts > available:
                raise ValueError(
                    f"max_facts ({self.max_facts}) is more than the {available} facts a {kind} passage can state"
                )
        return self


def _validation_message(err: ValidationError, model: type[BaseModel], label: str) -> str:
    first = err.errors()[0]
    where = ".".join(map(str, first["loc"]))
    if first["type"] == "extra_forbidden":
        return f"{label}: unknown field '{where}'; fields are {', '.join(model.model_fields)}"
    message = first["msg"].removeprefix("Value error, ")
    return f"{label}: {message}" if not where else f"{label}: field '{where}': {message}"


def config_from(
    model: type[ConfigT], label: str, source: BaseModel | Mapping[str, Any] | str | Path | None, **overrides: Any
) -> ConfigT:
    """A validated generator config of type `model` from a config, a mapping, a YAML file or nothing (the
    defaults), with overrides; `label` names the config in error messages ("fictional config")."""
    if isinstance(source, BaseModel):
        data: Any = source.model_dump()
    elif isinstance(source, (str, Path)):
        path = Path(source)
        try:
            data = yaml.safe_load(path.read_text())
        except OSError as err:
            raise FictionalConfigError(f"{path}: cannot read ({err.strerror})") from None
        except yaml.YAMLError as err:
            raise FictionalConfigError(f"{path}: not valid YAML ({getattr(err, 'problem', None) or err})") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            got = type(data).__name__
            raise FictionalConfigError(f"{path}: expected a mapping of {label} fields, got {got}")
    elif source is None:
        data = {}
    elif isinstance(source, Mapping):
        data = dict(source)
    else:
        raise FictionalConfigError(f"{label}: expected a mapping, got {type(source).__name__}")
    try:
        return model.model_validate({**data, **overrides})
    except ValidationError as err:
        raise FictionalConfigError(_validation_message(err, model, label)) from None


def make_config(
    source: FictionalConfig | Mapping[str, Any] | str | Path | None = None, **overrides: Any
) -> FictionalConfig:
    """A validated config from a config, a mapping, a YAML file or nothing (the defaults), with overrides.

    Args:
        source: a `FictionalConfig`, a mapping of its fields, the path of a YAML mapping, or None.
        overrides: fields that replace those of `source`.

    Raises:
        FictionalConfigError: one message naming the problem (unknown key, min above max, negative count,
            a YAML file that is not a mapping or not YAML).
    """
    return config_from(FictionalConfig, "fictional config", source, **overrides)


# --- names -----------------------------------------------------------------------------------------

# Invented words are built from syllables; the real words and names the syllables can spell are in
# fictional_blocked.BLOCKED, and the generator also refuses every word of its templates and of excluded files.
_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z")
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o")  # a, e, o twice: names read more easily
_CODAS = ("n", "r", "l", "s", "m")


@dataclass(frozen=True)
class Entity:
    type: str  # person, town, river, organisation, invention
    name: str  # the answer string, as the passage writes it
    words: tuple[str, ...]  # its invented words (each used by this entity only)
    mention: str  # how sentences and questions refer to it

    def as_record(self) -> dict[str, str]:
        return {"type": self.type, "name": self.name}


_ORG_TYPES = ("Company", "Society", "Guild", "Trading House", "Bank")
_DEVICE_NOUNS = ("lamp", "loom", "pump", "engine", "clock", "lens", "compass", "kettle", "valve", "drill", "stove")


class Names:
    """Invented words, each handed out once, never a word of the templates or of an excluded file."""

    def __init__(self, rng: Random, taken: set[str]):
        self.rng = rng
        self.taken = taken  # lower case
        self.initials: set[str] = set()

    def new_passage(self) -> None:
        # Within a passage every invented word starts with its own letter: a small model copying a name
        # out of the passage mixes up names that look alike (Zotes / Zetes, Fanol / Folan).
        self.initials = set()

    def word(self, syllables: int) -> str:
        for _ in range(10_000):
            parts = [self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) for _ in range(syllables)]
            if self.rng.random() < 0.7:
                parts[-1] += self.rng.choice(_CODAS)
            word = "".join(parts)
            if len(word) >= 4 and word not in self.taken and word not in BLOCKED and word[0] not in self.initials:
                self.taken.add(word)
                self.initials.add(word[0])
                return word.capitalize()
        raise RuntimeError("ran out of invented words")  # needs millions of entities

    def entity(self, type_: str) -> Entity:
        if type_ == "person":
            first, last = self.word(2), self.word(2)
            name = f"{first} {last}"
            return Entity(type_, name, (first, last), name)
        if type_ == "town":
            # Three syllables: a small model "corrects" a short invented town to a real place (Peman -> Pemba).
            town = self.word(3)
            return Entity(type_, town, (town,), town)
        if type_ == "river":
            stem = self.word(2)
            name = f"{stem} River"
            return Entity(type_, name, (stem,), f"the {name}")
        if type_ == "organisation":
            stem = self.word(2)
            name = f"{stem} {self.rng.choice(_ORG_TYPES)}"
            return Entity(type_, name, (stem,), f"the {name}")
        if type_ == "invention":
            stem = self.word(2)
            name = f"{stem} {self.rng.choice(_DEVICE_NOUNS)}"
            return Entity(type_, name, (stem,), f"the {name}")
        raise ValueError(f"unknown entity type {type_!r}")


# --- facts -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Relation:
    """A fact linking `a` to `b`. `a_first`/`b_first`: sentences starting from a / from b.
    `ask_b`: questions giving a and asking for b, the i-th worded like a_first[i]; `ask_a` the other way
    round, worded like b_first[i]. A fact uses the same i for its sentence and its question, so a forward
    question keeps the sentence's verb and a reverse one reads the same wording from the other side.
    A value relation (b is a year or a number) has no b_first sentences and no ask_a questions."""

    name: str
    a: str
    b: str  # an entity type, or "year" / "number"
    a_first: tuple[str, ...]
    ask_b: tuple[str, ...]
    b_first: tuple[str, ...] = ()
    ask_a: tuple[str, ...] = ()
    values: tuple[int, int] = (0, 0)  # range of a number or a year
    unit: str = ""  # a number's unit, part of the answer ("46 kilograms")

    @property
    def is_value(self) -> bool:
        return self.b in ("year", "number")


RELATIONS: tuple[Relation, ...] = (
    Relation(
        "born_in", "person", "town",
        a_first=("{a} was born in {b}.", "{a} was born in the town of {b}.", "The home town of {a} was {b}."),
        b_first=("{b} is the town where {a} was born.", "The town of {b} was the birthplace of {a}.",
                 "{b} was the home town of {a}."),
        ask_b=("Where was {a} born?", "In which town was {a} born?", "What was the home town of {a}?"),
        ask_a=("Who was born in {b}?", "Who was born in the town of {b}?", "Whose home town was {b}?"),
    ),
    Relation(
        "born_year", "person", "year", values=(1610, 1985),
        a_first=("{a} was born in the year {b}.", "In the year {b}, {a} was born.", "{a} was born in {b}."),
        ask_b=("In what year was {a} born?", "When was {a} born?", "What year was {a} born in?"),
    ),
    Relation(
        "founded", "person", "organisation",
        a_first=("{a} founded {b}.", "{a} started {b}.", "{a} set up {b}."),
        b_first=("{B} was founded by {a}.", "{B} was started by {a}.", "{B} was set up by {a}."),
        ask_b=("What did {a} found?", "What group did {a} start?", "What did {a} set up?"),
        ask_a=("Who founded {b}?", "Who started {b}?", "Who set up {b}?"),
    ),
    Relation(
        "invented", "person", "invention",
        a_first=("{a} invented {b}.", "{a} built the first {n}.", "{a} was the inventor of {b}."),
        b_first=("{B} was invented by {a}.", "The first {n} was built by {a}.", "The inventor of {b} was {a}."),
        ask_b=("What did {a} invent?", "Which machine did {a} build first?", "What was {a} the inventor of?"),
        ask_a=("Who invented {b}?", "Who built the first {n}?", "Who was the inventor of {b}?"),
    ),
    Relation(
        "married", "person", "person",
        a_first=("{a} married {b}.", "{a} was married to {b}.", "The spouse of {a} was {b}."),
        b_first=("{b} married {a}.", "{b} was married to {a}.", "{b} was the spouse of {a}."),
        ask_b=("Who did {a} marry?", "Who was {a} married to?", "Who was the spouse of {a}?"),
        ask_a=("Who did {b} marry?", "Who was {b} married to?", "Who was the spouse of {b}?"),
    ),
    Relation(
        "teacher", "person", "person",
        a_first=("{a} was taught by {b}.", "The teacher of {a} was {b}.", "{a} studied under {b}."),
        b_first=("{b} taught {a}.", "{b} was the teacher of {a}.", "{b} had {a} as a student."),
        ask_b=("Who taught {a}?", "Who was the teacher of {a}?", "Under whom did {a} study?"),
        ask_a=("Who did {b} teach?", "Who was {b} the teacher of?", "Who was a student of {b}?"),
    ),
    Relation(
        "books", "person", "number", values=(12, 97),
        a_first=("{a} wrote {b} books.", "{a} published {b} books.", "In total, {a} wrote {b} books."),
        ask_b=("How many books did {a} write?", "How many books did {a} publish?",
               "How many books did {a} write in total?"),
    ),
    Relation(
        "mayor", "town", "person",
        a_first=("The mayor of {a} was {b}.", "{a} had {b} as its mayor.", "{a} was run by a mayor named {b}."),
        b_first=("{b} was the mayor of {a}.", "{b} served as mayor of {a}.", "{b} ran the town of {a} as mayor."),
        ask_b=("Who was the mayor of {a}?", "Who did {a} have as its mayor?", "Who ran {a} as mayor?"),
        ask_a=("Of which town was {b} the mayor?", "Which town did {b} serve as mayor?",
               "Which town did {b} run as mayor?"),
    ),
    Relation(
        "town_founded", "town", "year", values=(1210, 1890),
        a_first=("{a} was founded in {b}.", "The town of {a} was founded in the year {b}.", "{a} was built in {b}."),
        ask_b=("In what year was {a} founded?", "When was the town of {a} founded?", "What year was {a} built?"),
    ),
    Relation(
        "river", "town", "river",
        a_first=("{a} lies on {b}.", "{a} was built beside {b}.", "{a} sits on the banks of {b}."),
        b_first=("{B} flows through {a}.", "{B} runs past {a}.", "{B} passes through the town of {a}."),
        ask_b=("What river does {a} lie on?", "Which river was {a} built beside?",
               "On the banks of which river does {a} sit?"),
        ask_a=("Which town does {b} flow through?", "Which town does {b} run past?",
               "Which town does {b} pass through?"),
    ),
    Relation(
        "population", "town", "number", values=(1200, 98000),
        a_first=("{a} has {b} people.", "About {b} people live in {a}.", "{a} is home to {b} people."),
        ask_b=("How many people does {a} have?", "How many people live in {a}?", "How many people is {a} home to?"),
    ),
    Relation(
        "based_in", "organisation", "town",
        a_first=("{A} is based in {b}.", "{A} has its main office in {b}.", "{A} is located in the town of {b}."),
        b_first=("{b} is home to {a}.", "{b} is where {a} is based.", "{b} hosts the main office of {a}."),
        ask_b=("Where is {a} based?", "Where does {a} have its main office?", "In which town is {a} located?"),
        ask_a=("What group is {b} home to?", "What group is based in {b}?", "Which group has its main office in {b}?"),
    ),
    Relation(
        "org_founded", "organisation", "year", values=(1650, 1990),
        a_first=("{A} was founded in {b}.", "{A} was set up in the year {b}.", "{A} opened in {b}."),
        ask_b=("In what year was {a} founded?", "When was {a} set up?", "What year did {a} open?"),
    ),
    Relation(
        "makes", "organisation", "invention",
        a_first=("{A} makes {b}.", "{A} builds {b}.", "{A} produces {b}."),
        b_first=("{B} is made by {a}.", "{B} is built by {a}.", "{B} is produced by {a}."),
        ask_b=("What does {a} make?", "What machine does {a} build?", "What does {a} produce?"),
        ask_a=("Who makes {b}?", "Which group builds {b}?", "What group produces {b}?"),
    ),
    Relation(
        "workers", "organisation", "number", values=(40, 9000),
        a_first=("{A} has {b} workers.", "{A} employs {b} people.", "{b} people work for {a}."),
        ask_b=("How many workers does {a} have?", "How many people does {a} employ?", "How many people work for {a}?"),
    ),
    Relation(
        "leader", "organisation", "person",
        a_first=("{A} is led by {b}.", "The head of {a} is {b}.", "{A} is run by {b}."),
        b_first=("{b} leads {a}.", "{b} is the head of {a}.", "{b} runs {a}."),
        ask_b=("Who leads {a}?", "Who is the head of {a}?", "Who runs {a}?"),
        ask_a=("Which group does {b} lead?", "What group is {b} the head of?", "Which group does {b} run?"),
    ),
    Relation(
        "owns", "organisation", "organisation",
        a_first=("{A} owns {b}.", "{A} bought {b}.", "{A} took over {b}."),
        b_first=("{B} is owned by {a}.", "{B} was bought by {a}.", "{B} was taken over by {a}."),
        ask_b=("What does {a} own?", "What did {a} buy?", "What did {a} take over?"),
        ask_a=("Who owns {b}?", "Who bought {b}?", "Who took over {b}?"),
    ),
    Relation(
        "invented_year", "invention", "year", values=(1620, 1980),
        a_first=("{A} was invented in {b}.", "{A} was invented in the year {b}.", "The first {n} was made in {b}."),
        ask_b=("When was {a} invented?", "In what year was {a} invented?", "What year was the first {n} made?"),
    ),
    Relation(
        "built_in", "invention", "town",
        a_first=("The first {n} was built in {b}.", "{A} was first made in the town of {b}.", "{A} comes from {b}."),
        b_first=("{b} is the town where the first {n} was built.", "The town of {b} made the first {n}.",
                 "{b} is the home of {a}."),
        ask_b=("Where was the first {n} built?", "In which town was {a} first made?", "Which town does {a} come from?"),
        ask_a=("What was first built in {b}?", "What machine did the town of {b} make first?",
               "What machine is {b} the home of?"),
    ),
    Relation(
        "tested_on", "invention", "river",
        a_first=("{A} was first tested on {b}.", "The first {n} was tried out on {b}.", "{A} was first used on {b}."),
        b_first=("{B} is where {a} was first tested.", "{B} is where the first {n} was tried out.",
                 "{B} is where {a} was first used."),
        ask_b=("On which river was {a} first tested?", "On which river was the first {n} tried out?",
               "On which river was {a} first used?"),
        ask_a=("What machine was first tested on {b}?", "What machine was first tried out on {b}?",
               "What machine was first used on {b}?"),
    ),
    Relation(
        "parts", "invention", "number", values=(14, 480),
        a_first=("{A} has {b} parts.", "{A} is made of {b} parts.", "{A} is built from {b} parts."),
        ask_b=("How many parts does {a} have?", "How many parts is {a} made of?", "How many parts is {a} built from?"),
    ),
)  # fmt: skip


def relations_about(kind: str) -> list[tuple[Relation, str]]:
    """The relations a passage about a `kind` can state, each with the main entity's side ('a' or 'b')."""
    out = []
    for relation in RELATIONS:
        if relation.a == kind:
            out.append((relation, "a"))
        elif relation.b == kind and relation.ask_a:
            out.append((relation, "b"))
    return out


def answer_type(relation: Relation, main_side: str) -> str:
    """What a question about this fact asks for: an entity type, 'year' or 'number'."""
    return relation.b if main_side == "a" else relation.a


def answer_types(kind: str) -> list[str]:
    """The distinct answer types a passage about a `kind` can ask for: at most one fact of each."""
    return list(dict.fromkeys(answer_type(relation, side) for relation, side in relations_about(kind)))


def _value_text(relation: Relation, value: int) -> str:
    text = f"{value:,}" if relation.b == "number" and value >= 10_000 else str(value)
    return f"{text} {relation.unit}" if relation.unit else text


def _fill(template: str, a: Entity | str, b: Entity | str) -> str:
    """A template with {a}/{b} (mentions), {A}/{B} (mentions capitalised to start a sentence) and {n}
    (the invention's name, for 'the first {n}')."""

    def mention(x: Entity | str) -> str:
        return x.mention if isinstance(x, Entity) else x

    invention = next((x for x in (a, b) if isinstance(x, Entity) and x.type == "invention"), None)
    text = template.replace("{a}", mention(a)).replace("{b}", mention(b))
    text = text.replace("{A}", _capitalise(mention(a))).replace("{B}", _capitalise(mention(b)))
    if invention is not None:
        text = text.replace("{n}", invention.name)
    return _capitalise(text)


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


# --- passages --------------------------------------------------------------------------------------


@dataclass
class _Fact:
    relation: Relation
    main_side: str  # 'a' or 'b': which side the passage's main entity is on
    other: Entity | str  # the answer: an entity, or a value's text
    asked: bool = False
    reverse: bool = False  # the sentence starts from the answer


@dataclass
class _Plan:
    kind: str
    facts: list[_Fact] = field(default_factory=list)


def _plan(rng: Random, kind: str, cfg: FictionalConfig) -> _Plan:
    n_questions = rng.randint(cfg.min_questions, cfg.max_questions)
    n_facts = rng.randint(max(cfg.min_facts, n_questions), cfg.max_facts)
    candidates = relations_about(kind)
    rng.shuffle(candidates)
    # One fact per type of answer: with two people (or two towns) in a passage a small model reading it
    # answers "Who taught X?" with the spouse about as often as with the teacher.
    chosen, types = [], set()
    for relation, side in candidates:
        if answer_type(relation, side) not in types and len(chosen) < n_facts:
            chosen.append((relation, side))
            types.add(answer_type(relation, side))
    plan = _Plan(kind, [_Fact(relation, side, "") for relation, side in chosen])
    for fact in rng.sample(plan.facts, n_questions):
        fact.asked = True
    return plan


def _reversible(fact: _Fact) -> bool:
    return not fact.relation.is_value


def _assign_reverse(rng: Random, plans: list[_Plan], fraction: float) -> None:
    """Exactly round(fraction x questions) reverse questions in the file (as many as it has reversible facts)."""
    asked = [f for p in plans for f in p.facts if f.asked]
    candidates = [f for f in asked if _reversible(f)]
    for fact in rng.sample(candidates, min(len(candidates), round(fraction * len(asked)))):
        fact.reverse = True


def _render(rng: Random, plan: _Plan, names: Names) -> dict:
    names.new_passage()
    main = names.entity(plan.kind)
    entities = [main]
    sentences, questions = [], []
    for fact in plan.facts:
        relation = fact.relation
        other_type = relation.b if fact.main_side == "a" else relation.a
        if relation.is_value:
            other: Entity | str = _value_text(relation, rng.randint(*relation.values))
            answer = other
        else:
            other = names.entity(other_type)
            entities.append(other)
            answer = other.name
        a, b = (main, other) if fact.main_side == "a" else (other, main)
        # The sentence starts from the main entity unless the question is to be read from the other side;
        # facts not asked about are stated either way.
        starts_from_main = not fact.reverse if fact.asked else (relation.is_value or rng.random() < 0.5)
        from_a = starts_from_main == (fact.main_side == "a")
        templates = relation.a_first if (from_a or not relation.b_first) else relation.b_first
        wording = rng.randrange(len(templates))
        sentences.append(_fill(templates[wording], a, b))
        if fact.asked:
            ask = relation.ask_b if fact.main_side == "a" else relation.ask_a
            questions.append(
                {
                    "question": _fill(ask[wording], a, b),
                    "answer": answer,
                    "fact": relation.name,
                    "kind": "reverse" if fact.reverse else "forward",
                }
            )
    order = list(range(len(sentences)))
    rng.shuffle(order)
    rng.shuffle(questions)
    return {
        "title": main.name,
        "context": " ".join(sentences[i] for i in order),
        "questions": questions,
        "entities": [e.as_record() for e in entities],
    }


_WORD = re.compile(r"[A-Za-z]+")


def words_in(texts: Iterable[str]) -> set[str]:
    """Every word (lower case) of the texts: what an invented name must never be."""
    return {w.lower() for text in texts for w in _WORD.findall(text)}


def _template_words() -> set[str]:
    texts = [*_ORG_TYPES, *_DEVICE_NOUNS]
    for relation in RELATIONS:
        texts += [*relation.a_first, *relation.b_first, *relation.ask_b, *relation.ask_a]
    return words_in(texts)


def excluded_words(paths: Iterable[str | Path]) -> set[str]:
    """Every word (lower case) of the given passage files: titles, contexts, questions and answers.

    Args:
        paths: passage files in the SEAL format (any, not only generated ones).
    """
    words: set[str] = set()
    for path in paths:
        path = Path(path)
        records = read_passage_list(path, missing="no such file (given to exclude)")
        for record in records:
            if not isinstance(record, dict):
                continue
            texts = [record.get("title"), record.get("context")]
            questions = [q for q in record.get("questions") or [] if isinstance(q, dict)]
            texts += [q.get(k) for q in questions for k in ("question", "answer")]
            texts += [e.get("name") for e in record.get("entities") or [] if isinstance(e, dict)]
            words |= words_in(text for text in texts if isinstance(text, str))
    return words


def generate(
    cfg: FictionalConfig | Mapping[str, Any] | str | Path | None = None,
    exclude: Iterable[str | Path] = (),
    **overrides: Any,
) -> list[dict]:
    """Passages in the SEAL format about invented entities, deterministic in the config and the exclusions.

    Args:
        cfg: a `FictionalConfig`, a mapping of its fields or a YAML file of them (None: the defaults).
        exclude: passage files whose words no invented name may use, so that files are entity-disjoint.
        overrides: config fields replacing those of `cfg` (e.g. `passages=60, seed=1`).

    Returns:
        One dict per passage: `title` (the main entity), `context`, `questions` (each with `question`,
        `answer`, `fact`, `kind`: forward | reverse) and `entities` (each with `type` and `name`).
    """
    cfg = make_config(cfg, **overrides)
    rng = Random(cfg.seed)
    kinds = [cfg.kinds[i % len(cfg.kinds)] for i in range(cfg.passages)]
    rng.shuffle(kinds)
    plans = [_plan(rng, kind, cfg) for kind in kinds]
    _assign_reverse(rng, plans, cfg.reverse_fraction)
    names = Names(rng, _template_words() | excluded_words(exclude))
    return [_render(rng, plan, names) for plan in plans]


def write(path: str | Path, passages: list[dict]) -> Path:
    """Write passages as a SEAL passages file (JSON list, one space indent, trailing newline).

    Args:
        path: the file to write; its folder is created.
        passages: what `generate` returned.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(passages, indent=1, ensure_ascii=False) + "\n")
    return path


DEFAULT_SPLITS: dict[str, tuple[int, int]] = {"eval": (60, 1001), "val": (30, 2002), "train": (100, 3003)}


def make_split_files(
    out_dir: str | Path,
    splits: Mapping[str, tuple[int, int]] | None = None,
    cfg: FictionalConfig | Mapping[str, Any] | None = None,
    exclude: Iterable[str | Path] = (),
) -> dict[str, Path]:
    """Write one file per split, `<out_dir>/<split>.json`, in the given order, each generated with every
    earlier split (and `exclude`) excluded, so the files share no entity.

    Args:
        out_dir: the folder for the files.
        splits: split name -> (passages, seed), in generation order; default `DEFAULT_SPLITS`
            (eval 60 passages seed 1001, val 30 seed 2002, train 100 seed 3003).
        cfg: the other generator fields (passages and seed come from `splits`).
        exclude: further passage files every split avoids.

    Returns:
        Split name -> the path written.
    """
    base = make_config(cfg)
    configs = {name: make_config(base, passages=n, seed=seed) for name, (n, seed) in (splits or DEFAULT_SPLITS).items()}
    return write_splits(out_dir, configs, generate, exclude)


def write_splits(
    out_dir: str | Path,
    configs: Mapping[str, ConfigT],
    generator: Callable[..., list[dict]],
    exclude: Iterable[str | Path] = (),
) -> dict[str, Path]:
    """`<out_dir>/<split>.json` for each split's config, in order, each generated by `generator(cfg, exclude=...)`
    with every earlier split (and `exclude`) excluded, so the files share no entity."""
    out_dir = Path(out_dir)
    done: list[Path] = []
    written: dict[str, Path] = {}
    for name, split_cfg in configs.items():
        written[name] = write(out_dir / f"{name}.json", generator(split_cfg, exclude=[*exclude, *done]))
        done.append(written[name])
    return written
