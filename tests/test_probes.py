"""The probes self-edit: questions the policy writes about the passage, answered by the model reading it."""

import pytest
from pydantic import ValidationError

from seal.config import KnowledgeEvalConfig, MemoryConfig
from seal.domains import knowledge
from seal.domains.knowledge import Passage, Question
from seal.engine.sampling import generate
from seal.experiments.knowledge_steps import probe_answer_work, training_documents

PASSAGE = Passage("Super Bowl 50", "The Broncos won.", [Question("Who won?", "the Broncos")])


def test_probe_questions_are_the_lines_asking_something_each_once():
    text = (
        "Questions:\n1. Who won Super Bowl 50?\n2) Who won super bowl 50 ?\n- **Which team lost?** (hard)\n"
        "The Broncos won.\nQ3: Where was it played? It was in Santa Clara.\n?"
    )
    assert knowledge.probe_questions(text) == [
        "Who won Super Bowl 50?",
        "Who won super bowl 50 ?",
        "Which team lost?",
        "Where was it played?",
    ]
    assert knowledge.probe_questions("No question here.") == []


def test_a_probes_self_edit_is_one_document_per_answered_question():
    edit = knowledge.probes_self_edit(["Who won?", "Who lost?", "Where?"], [" the Broncos", "the Panthers", " "])
    plan = knowledge.plan(PASSAGE, edit, knowledge.PROBES)
    assert plan.documents == [
        "Super Bowl 50\nQuestion: Who won?\nAnswer: the Broncos",
        "Super Bowl 50\nQuestion: Who lost?\nAnswer: the Panthers",
        "Super Bowl 50\nThe Broncos won.",
    ]
    # under distill, the teacher reads the passage before each pair; the passage document stays plain
    documents = training_documents(plan)
    assert [d.context for d in documents[:2]] == ["Super Bowl 50\nThe Broncos won.\n\n"] * 2
    assert documents[2] == "Super Bowl 50\nThe Broncos won."


def test_probes_are_answered_by_the_model_reading_the_passage(tiny_lm):
    edit = {"prompt": "ignored here", "text": "1. Who won?\n2. Who won?\nnot a question\n3. Which game?"}
    (written,) = probe_answer_work(tiny_lm, [("k", PASSAGE, edit)], KnowledgeEvalConfig().answer)
    prompts = [knowledge.probe_answer_prompt(tiny_lm, PASSAGE, q) for q in ("Who won?", "Which game?")]
    assert all("The Broncos won." in p for p in prompts)
    answers = generate(tiny_lm, prompts, max_new_tokens=64, stop_at_newline=True)
    assert written == knowledge.probes_self_edit(["Who won?", "Which game?"], answers)


def test_a_library_refuses_the_probes_variant():
    with pytest.raises(ValidationError, match="probes needs a second"):
        MemoryConfig(variant="probes")
