import json
import random
import re

import pytest

from seal.domains import knowledge
from seal.domains.knowledge import DataError, Passage, Question


def write(tmp_path, payload, name="data.json"):
    path = tmp_path / name
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return path


GOOD = {"title": "T", "context": "Some passage.", "questions": [{"question": "Q?", "answer": "A"}]}


@pytest.mark.parametrize(
    "payload, message",
    [
        ("[{", "not valid JSON"),
        ({"title": "x"}, "expected a JSON list"),
        ([], "holds no passages"),
        ([GOOD, {"title": "T", "questions": []}], "record 1: missing field 'context'"),
        ([{**GOOD, "context": "   "}], "record 0: field 'context' is empty"),
        ([{**GOOD, "questions": [{"question": "Q?"}]}], "record 0: questions[0]: missing field 'answer'"),
        ([{**GOOD, "questions": "nope"}], "field 'questions' must be a list"),
        ([{**GOOD, "completions": [1, 2]}], "'completions' must be a list of strings"),
        (["just a string"], "record 0: expected an object"),
    ],
)
def test_bad_files_are_reported_with_file_record_and_field(tmp_path, payload, message):
    path = write(tmp_path, payload)
    with pytest.raises(DataError, match=re.escape(message)) as err:
        knowledge.load_passages(path)
    assert str(path) in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        knowledge.load_passages(tmp_path / "absent.json")


def test_paper_subset_is_first_n_after_seed_42_shuffle(shared_data):
    passages = knowledge.load_passages(shared_data / "squad" / "squad_val.json")
    assert len(passages) == 2067
    expected = list(range(len(passages)))
    random.seed(42)
    random.shuffle(expected)
    subset = knowledge.paper_subset(passages, 200)
    assert [p.source_index for p in subset] == expected[:200]
    assert sum(len(p.questions) for p in subset) == 974  # the paper's 974 evaluation questions


def test_synthetic_files_with_completions_load(shared_data):
    passages = knowledge.load_passages(shared_data / "squad" / "synthetic" / "eval" / "gpt4_1_val.json")
    assert len(passages) == 200 and all(len(p.completions) == 5 for p in passages)


PASSAGE = Passage("Super Bowl 50", "The Broncos won.", [Question("Who won?", "the Broncos")])


def test_plan_implications_one_document_per_line_title_prefixed_passage_last():
    text = "**Implications:**\n\n1. The Broncos won a game.\n2. A title was decided.\n"
    plan = knowledge.plan(PASSAGE, text, "implications")
    assert plan.documents == [
        "Super Bowl 50\n1. The Broncos won a game.",
        "Super Bowl 50\n2. A title was decided.",
        "Super Bowl 50\nThe Broncos won.",
    ]
    assert plan.self_edit_documents == 2


def test_plan_without_line_splitting_keeps_the_self_edit_whole():
    plan = knowledge.plan(PASSAGE, "Here are some rewrites:\nA.\nB.", "rewrite", split_lines=False)
    assert plan.documents == ["Super Bowl 50\nHere are some rewrites:\nA.\nB.", "Super Bowl 50\nThe Broncos won."]


def test_plan_self_qa_splits_per_question():
    text = "Question: Who won?\nAnswer: The Broncos.\nQuestion: Which game?\nAnswer: Super Bowl 50."
    plan = knowledge.plan(PASSAGE, text, "self-qa")
    assert plan.documents[:2] == [
        "Super Bowl 50\nQuestion: Who won?\nAnswer: The Broncos.",
        "Super Bowl 50\nQuestion: Which game?\nAnswer: Super Bowl 50.",
    ]


@pytest.mark.parametrize("variant", knowledge.VARIANTS)
def test_every_variant_has_a_prompt_with_the_passage(variant):
    prompt = knowledge.self_edit_prompt(PASSAGE, variant)
    assert "Super Bowl 50\nThe Broncos won." in prompt
    plan = knowledge.plan(PASSAGE, "Line one.\nLine two.", variant)
    assert plan.documents[-1] == "Super Bowl 50\nThe Broncos won." and len(plan.documents) >= 2


def test_empty_self_edit_trains_on_the_passage_only():
    plan = knowledge.plan(PASSAGE, "", "implications")
    assert plan.documents == ["Super Bowl 50\nThe Broncos won."] and plan.self_edit_documents == 0
    assert knowledge.plan(PASSAGE, "Implications:\n", "implications").notes == ["self-edit had no usable lines"]


def test_unknown_variant():
    with pytest.raises(ValueError, match="unknown self-edit variant"):
        knowledge.self_edit_prompt(PASSAGE, "poetry")
