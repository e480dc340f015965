import json
import re
from pathlib import Path

import pytest

from seal.domains import fictional, fictional_prose, knowledge
from seal.domains.fictional import FictionalConfig, FictionalConfigError

DATA = Path(__file__).resolve().parents[1] / "data" / "fictional"
NAME_WORDS = re.compile(r"[A-Z][a-z]+")


def invented_words(passage: dict) -> set[str]:
    """The invented words of a passage's entities (org types, device nouns and 'River' are common words)."""
    common = {w.lower() for w in fictional._ORG_TYPES + fictional._DEVICE_NOUNS} | {"river", "trading", "house"}
    return {w.lower() for e in passage["entities"] for w in e["name"].split() if w.lower() not in common}


@pytest.mark.parametrize(("generator", "n"), [(fictional, 12), (fictional_prose, 24)], ids=["facts", "prose"])
def test_same_seed_same_file_and_different_seeds_differ(tmp_path, generator, n):
    a = fictional.write(tmp_path / "a.json", generator.generate(passages=n, seed=5))
    b = fictional.write(tmp_path / "b.json", generator.generate(passages=n, seed=5))
    c = fictional.write(tmp_path / "c.json", generator.generate(passages=n, seed=6))
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_answer_is_stated_in_its_passage_and_never_in_its_title_or_question(seed):
    for p in fictional.generate(passages=40, seed=seed):
        for q in p["questions"]:
            assert q["answer"].lower() in p["context"].lower()
            assert q["answer"].lower() not in p["title"].lower()
            assert q["answer"].lower() not in q["question"].lower()
            assert p["title"] in q["question"]  # every question is about the passage's main entity


def test_no_entity_or_invented_word_is_shared_within_a_file():
    passages = fictional.generate(passages=200, seed=3)
    seen_names, seen_words = set(), set()
    for p in passages:
        names = {e["name"].lower() for e in p["entities"]}
        words = invented_words(p)
        assert len(names) == len(p["entities"])
        assert not names & seen_names and not words & seen_words
        seen_names |= names
        seen_words |= words


def test_exclude_makes_files_entity_disjoint(tmp_path):
    first = fictional.write(tmp_path / "first.json", fictional.generate(passages=60, seed=9))
    second = fictional.generate(passages=60, seed=9, exclude=[first])  # same seed: only the exclusion separates them
    first_words = set().union(*(invented_words(p) for p in json.loads(first.read_text())))
    second_words = set().union(*(invented_words(p) for p in second))
    assert not first_words & second_words


def test_exclude_reads_any_passage_file(tmp_path):
    other = tmp_path / "other.json"
    other.write_text(json.dumps([{"title": "Lalar", "context": "Revam and Palas.", "questions": []}]))
    assert {"lalar", "revam", "palas", "and"} <= fictional.excluded_words([other])
    with pytest.raises(knowledge.DataError, match="no such file"):
        fictional.generate(passages=1, exclude=[tmp_path / "absent.json"])


def test_load_passages_reads_the_output(tmp_path):
    generated = fictional.generate(passages=10, seed=4)
    path = fictional.write(tmp_path / "f.json", generated)
    passages = knowledge.load_passages(path)
    assert [p.title for p in passages] == [g["title"] for g in generated]
    assert [[(q.question, q.answer) for q in p.questions] for p in passages] == [
        [(q["question"], q["answer"]) for q in g["questions"]] for g in generated
    ]


@pytest.mark.parametrize(
    "bounds", [{}, {"min_facts": 2, "max_facts": 3, "min_questions": 1, "max_questions": 2}, {"min_facts": 6}]
)
def test_fact_and_question_counts_stay_within_bounds(bounds):
    cfg = fictional.make_config(passages=40, seed=1, **bounds)
    for p in fictional.generate(cfg):
        facts = len(re.findall(r"[.!?](?:\s|$)", p["context"]))
        assert cfg.min_facts <= facts <= cfg.max_facts
        assert cfg.min_questions <= len(p["questions"]) <= min(cfg.max_questions, facts)
        assert len({q["fact"] for q in p["questions"]}) == len(p["questions"])  # one question per fact
        assert len(p["entities"]) <= facts + 1


@pytest.mark.parametrize("fraction", [0.0, 0.3, 1.0])
def test_reverse_questions_make_the_asked_share(fraction):
    passages = fictional.generate(passages=30, seed=2, reverse_fraction=fraction)
    kinds = [q["kind"] for p in passages for q in p["questions"]]
    reversible = [q for p in passages for q in p["questions"] if q["answer"] in {e["name"] for e in p["entities"]}]
    assert set(kinds) <= {"forward", "reverse"}
    assert kinds.count("reverse") == min(round(fraction * len(kinds)), len(reversible))
    if fraction == 0.3:
        assert 0 < kinds.count("reverse") < len(kinds)


def test_reverse_sentences_start_from_the_answer():
    for p in fictional.generate(passages=30, seed=7):
        sentences = re.split(r"(?<=\.) ", p["context"])
        names = {e["name"] for e in p["entities"]}
        for q in p["questions"]:
            if q["answer"] not in names:  # a year or a number: always asked from the side it is stated
                assert q["kind"] == "forward"
                continue
            stating = [s for s in sentences if q["answer"] in s]
            assert len(stating) == 1
            answer_first = stating[0].index(q["answer"]) < stating[0].index(p["title"])
            assert answer_first == (q["kind"] == "reverse")


def test_all_kinds_of_main_entity_are_generated():
    kinds = {p["entities"][0]["type"] for p in fictional.generate(passages=8, seed=0)}
    assert kinds == set(fictional.KINDS)
    only = fictional.generate(passages=3, seed=0, kinds=["town"])
    assert {p["entities"][0]["type"] for p in only} == {"town"}


@pytest.mark.parametrize(
    "source, message",
    [
        ({"passages": 3, "colour": "red"}, "unknown field 'colour'"),
        ({"min_facts": 5, "max_facts": 4}, "min_facts (5) is more than max_facts (4)"),
        ({"min_questions": 6, "max_questions": 5}, "min_questions (6) is more than max_questions (5)"),
        ({"min_questions": 5, "max_questions": 5, "min_facts": 1, "max_facts": 4}, "is more than max_facts (4)"),
        ({"passages": -1}, "field 'passages'"),
        ({"passages": 1001}, "field 'passages': Input should be less than or equal to 1000"),
        ({"min_facts": 0}, "field 'min_facts'"),
        ({"reverse_fraction": 1.5}, "field 'reverse_fraction'"),
        ({"max_facts": 9}, "max_facts (9) is more than the 6 facts"),
        ({"kinds": []}, "kinds is empty"),
        ({"kinds": ["dragon"]}, "field 'kinds.0'"),
        ({"seed": "abc"}, "field 'seed'"),
        ("- a\n- list\n", "expected a mapping of fictional config fields, got list"),
        ("passages: [1\n", "not valid YAML"),
        ("passages: 0\n", "field 'passages'"),
    ],
)
def test_malformed_configs_are_one_clear_error(tmp_path, source, message):
    if isinstance(source, str):
        path = tmp_path / "cfg.yaml"
        path.write_text(source)
        source = path
    with pytest.raises(FictionalConfigError) as err:
        fictional.generate(source)
    assert message in str(err.value)
    assert "\n" not in str(err.value)
    assert isinstance(err.value, ValueError)


def test_yaml_config_and_overrides(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("passages: 4\nseed: 8\nreverse_fraction: 0.5\n")
    cfg = fictional.make_config(path, seed=9)
    assert cfg == FictionalConfig(passages=4, seed=9, reverse_fraction=0.5)
    assert fictional.generate(path, seed=9) == fictional.generate(cfg)


def test_make_split_files_are_entity_disjoint(tmp_path):
    written = fictional.make_split_files(tmp_path, {"a": (10, 1), "b": (10, 1), "c": (5, 2)})
    assert list(written) == ["a", "b", "c"]
    words = [set().union(*(invented_words(p) for p in json.loads(written[s].read_text()))) for s in written]
    assert not words[0] & words[1] and not words[0] & words[2] and not words[1] & words[2]


def test_shipped_files_are_what_the_documented_calls_produce(tmp_path):
    written = fictional.make_split_files(tmp_path)  # the call data/fictional/README.md documents
    assert set(written) == {"eval", "val", "train"}
    for split, path in written.items():
        shipped = DATA / f"{split}.json"
        assert shipped.read_bytes() == path.read_bytes(), f"{shipped} drifted from the generator: regenerate it"
    sizes = {split: len(json.loads(path.read_text())) for split, path in written.items()}
    assert sizes == {"eval": 60, "val": 30, "train": 100}


def test_invented_words_are_not_blocked_real_words():
    words = set().union(*(invented_words(p) for p in fictional.generate(passages=100, seed=11)))
    assert not words & fictional.BLOCKED
    assert not words & {"river", "made", "town", "first"}
