import json
import re
import string
import typing
from collections import Counter
from pathlib import Path

import pytest

from seal.domains import fictional, fictional_prose, knowledge
from seal.domains.fictional import FictionalConfigError
from seal.domains.fictional_prose import GENRES, RELATIONS, ProseConfig

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "fictional-prose"
FACTS_FILES = [ROOT / "data" / "fictional" / f"{split}.json" for split in ("eval", "val", "train")]
COMMON = {w.lower() for genre in GENRES for spec in genre.slots.values() for w in re.findall(r"[A-Za-z]+", spec)}


def invented_words(passage: dict) -> set[str]:
    """The invented words of a passage's entities (their nouns, 'Lake' and 'River' are common words)."""
    return {w.lower() for e in passage["entities"] for w in e["name"].split()} - COMMON - {"lake", "river"}


def slots_named(template: str) -> set[str]:
    """The slots a template names in full ({P} or {P.name}), which is how an answer appears."""
    fields = {field.removesuffix(".name") for _, field, _, _ in string.Formatter().parse(template) if field}
    return {field for field in fields if "." not in field}


def slots_referred(template: str) -> set[str]:
    """The slots a template refers to in any way: the name, the surname, a pronoun."""
    return {field.split(".")[0] for _, field, _, _ in string.Formatter().parse(template) if field}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_answer_is_in_its_passage_never_the_title_and_passages_are_100_to_180_words(seed):
    for p in fictional_prose.generate(passages=60, seed=seed, min_questions=10, max_questions=15):
        assert 100 <= len(p["context"].split()) <= 180
        assert p["title"] == p["entities"][0]["name"] and p["title"] in p["context"]
        for q in p["questions"]:
            assert q["answer"] in p["context"]
            assert q["answer"].lower() not in p["title"].lower()  # closed-book prompts show the title as the topic
            assert q["answer"].lower() not in q["question"].lower()
        assert len({q["question"] for q in p["questions"]}) == len(p["questions"])


def test_every_fact_is_stated_by_every_wording_of_some_sentence():
    # A question's answer is then stated whatever wordings a passage drew, and a two-hop question's two facts
    # are both in it. The main entity may be a pronoun or implied: the passage is about it.
    for genre in GENRES:
        for relation, subject, obj in genre.facts:
            assert RELATIONS[relation].subject in genre.slots[subject], (genre.name, relation)
            assert genre.slots[obj].startswith(RELATIONS[relation].object), (genre.name, relation)
            stating = [
                sentence
                for sentence in genre.sentences
                if all(
                    (obj == genre.main or obj in slots_named(w))
                    and (subject == genre.main or subject in slots_referred(w))
                    for w in sentence
                    if w
                )
                and any(sentence)
            ]
            assert stating, f"{genre.name}: no sentence states {relation}({subject}, {obj}) in all its wordings"


def test_templates_use_only_declared_slots_and_every_slot_is_used():
    for genre in GENRES:
        used = set()
        for sentence in genre.sentences:
            for wording in sentence:
                assert slots_referred(wording) <= set(genre.slots), (genre.name, wording)
                used |= slots_referred(wording)
        assert used == set(genre.slots), genre.name


def test_two_hop_questions_chain_two_stated_facts_through_an_unnamed_entity():
    passages = fictional_prose.generate(passages=48, seed=4, min_questions=12, max_questions=15)
    two_hop = [(p, q) for p in passages for q in p["questions"] if q["kind"] == "two-hop"]
    assert len(two_hop) >= 48
    for p, q in two_hop:
        first, second = q["fact"].split("+")
        genre = next(g for g in GENRES if g.name == p["genre"])
        middle = {x for r, _, x in genre.facts if r == first}
        assert any(s in middle or o in middle for r, s, o in genre.facts if r == second)
        # the question names the entity the chain starts from, not the one it runs through
        assert sum(e["name"] in q["question"] for e in p["entities"]) == 1, q["question"]
    hops = Counter(q["fact"] for _, q in two_hop)
    assert "founded_by+born_in" in hops and len(hops) >= 10


def test_question_kinds_make_the_configured_shares():
    passages = fictional_prose.generate(passages=36, seed=2, min_questions=5, max_questions=5)
    for p in passages:
        kinds = Counter(q["kind"] for q in p["questions"])
        assert kinds == {"forward": 3, "reverse": 1, "two-hop": 1}, p["genre"]
        assert len({q["answer"] for q in p["questions"]}) == 5  # different answers while the passage has them
    only_forward = fictional_prose.generate(passages=12, seed=2, reverse_fraction=0, two_hop_fraction=0)
    assert {q["kind"] for p in only_forward for q in p["questions"]} == {"forward"}


def test_training_passages_carry_10_to_15_questions():
    passages = fictional_prose.generate(passages=24, seed=8, min_questions=10, max_questions=15)
    counts = [len(p["questions"]) for p in passages]
    assert min(counts) >= 10 and max(counts) <= 15 and len(set(counts)) > 1


def test_all_genres_are_used_in_turn_and_can_be_chosen():
    passages = fictional_prose.generate(passages=len(GENRES) * 2, seed=0)
    assert Counter(p["genre"] for p in passages) == {g.name: 2 for g in GENRES}
    assert set(typing.get_args(fictional_prose.Genres)) == set(fictional_prose.GENRE_NAMES)
    only = fictional_prose.generate(passages=3, seed=0, genres=["letter", "obituary"])
    assert {p["genre"] for p in only} == {"letter", "obituary"}


def test_no_entity_or_invented_word_is_shared_within_a_file():
    seen = set()
    for p in fictional_prose.generate(passages=240, seed=3):
        words = invented_words(p)
        assert len({e["name"] for e in p["entities"]}) == len(p["entities"])
        assert words and not words & seen
        assert not words & fictional.BLOCKED
        seen |= words


def test_exclude_makes_files_entity_disjoint_from_either_generator(tmp_path):
    facts = fictional.write(tmp_path / "facts.json", fictional.generate(passages=60, seed=9))
    first = fictional.write(tmp_path / "first.json", fictional_prose.generate(passages=60, seed=9, exclude=[facts]))
    second = fictional_prose.generate(passages=60, seed=9, exclude=[facts, first])  # same seed: only exclusion differs
    facts_words = fictional.excluded_words([facts])
    first_words = set().union(*(invented_words(p) for p in json.loads(first.read_text())))
    second_words = set().union(*(invented_words(p) for p in second))
    assert not first_words & facts_words and not second_words & facts_words and not first_words & second_words


def test_load_passages_reads_the_output(tmp_path):
    generated = fictional_prose.generate(passages=12, seed=4)
    passages = knowledge.load_passages(fictional.write(tmp_path / "p.json", generated))
    assert [p.title for p in passages] == [g["title"] for g in generated]
    assert [len(p.questions) for p in passages] == [len(g["questions"]) for g in generated]


def test_pronouns_follow_the_person():
    for p in fictional_prose.generate(passages=24, seed=6, genres=["encyclopedia"]):  # one person has pronouns
        pronouns = set(re.findall(r"\b(he|she|his|her|him)\b", p["context"].lower()))
        assert pronouns <= {"he", "his", "him"} or pronouns <= {"she", "her"}, p["context"]


@pytest.mark.parametrize(
    "source, message",
    [
        ({"colour": "red"}, "unknown field 'colour'"),
        ({"min_questions": 6, "max_questions": 5}, "min_questions (6) is more than max_questions (5)"),
        ({"min_words": 200}, "min_words (200) is more than max_words (180)"),
        ({"reverse_fraction": 0.6, "two_hop_fraction": 0.5}, "reverse_fraction + two_hop_fraction (0.6 + 0.5)"),
        ({"max_questions": 16}, "max_questions (16) is more than the 15 questions a 'field notes' passage can ask"),
        ({"max_questions": 16, "genres": ["encyclopedia"]}, None),
        ({"passages": 0}, "field 'passages'"),
        ({"passages": 1001}, "field 'passages': Input should be less than or equal to 1000"),
        ({"two_hop_fraction": -0.1}, "field 'two_hop_fraction'"),
        ({"genres": []}, "genres is empty"),
        ({"genres": ["letter", "letter"]}, "genres lists a genre twice"),
        ({"genres": ["sonnet"]}, "field 'genres.0'"),
        ({"min_words": 175, "max_words": 180}, "no wording of a"),
        ("- a\n- list\n", "expected a mapping of fictional prose config fields, got list"),
        ("passages: [1\n", "not valid YAML"),
    ],
)
def test_malformed_configs_are_one_clear_error(tmp_path, source, message):
    if isinstance(source, str):
        path = tmp_path / "cfg.yaml"
        path.write_text(source)
        source = path
    else:
        source = {"passages": 24, **source}
    if message is None:  # the limit is the genre's: one with more questions accepts it
        assert len(fictional_prose.generate(source)) == 24
        return
    with pytest.raises(FictionalConfigError) as err:
        fictional_prose.generate(source)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_yaml_config_and_overrides(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("passages: 4\nseed: 8\ngenres: [news, letter]\n")
    cfg = fictional_prose.make_config(path, seed=9)
    assert cfg == ProseConfig(passages=4, seed=9, genres=["news", "letter"])
    assert fictional_prose.generate(path, seed=9) == fictional_prose.generate(cfg)


def test_shipped_files_are_what_the_documented_call_produces(tmp_path):
    # the call data/fictional-prose/README.md documents
    written = fictional_prose.make_split_files(tmp_path, exclude=FACTS_FILES)
    assert list(written) == ["eval", "val", "train"]
    for split, path in written.items():
        shipped = DATA / f"{split}.json"
        assert shipped.read_bytes() == path.read_bytes(), f"{shipped} drifted from the generator: regenerate it"
    files = {split: json.loads(path.read_text()) for split, path in written.items()}
    assert {split: len(passages) for split, passages in files.items()} == {"eval": 200, "val": 60, "train": 300}
    assert {len(p["questions"]) for p in files["train"]} <= set(range(10, 16))
    assert {len(p["questions"]) for p in files["eval"] + files["val"]} <= {4, 5, 6}
    words = {split: set().union(*(invented_words(p) for p in passages)) for split, passages in files.items()}
    facts_words = fictional.excluded_words(FACTS_FILES)
    assert not words["eval"] & words["val"] and not words["eval"] & words["train"] and not words["val"] & words["train"]
    assert not (words["eval"] | words["val"] | words["train"]) & facts_words
