"""The probes self-edit: questions the policy writes about the passage, answered by the model reading it."""

import pytest
from pydantic import ValidationError

from seal.config import KnowledgeEvalConfig, MemoryConfig
from seal.domains import knowledge
from seal.domains.knowledge import Passage, Question
from seal.engine.sampling import generate
from seal.experiments import qa
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


def test_references_keep_spans_of_the_passage_and_answers_the_samples_agree_on():
    passage = Passage("Super Bowl 50", "The Denver Broncos beat the Carolina Panthers 24 to 10.", [])
    answered = [
        ("Who won?", ["The Denver Broncos.", "Broncos", "the denver broncos"]),  # a span of the passage
        ("Who won ?", ["Denver Broncos"]),  # the same question again
        ("What colour were the shirts?", ["orange", "Orange", "white"]),  # not a span, two samples agree
        ("Who sang the anthem?", ["Lady Gaga", "Beyonce", "Coldplay"]),  # neither
        ("What was the score?", ["", " "]),  # no answer
    ]
    assert qa.references(passage, answered) == [
        Question("Who won?", "The Denver Broncos."),
        Question("What colour were the shirts?", "orange"),
    ]
    assert [q.question for q in qa.references(passage, answered, agree=3)] == ["Who won?"]


def test_the_filter_drops_a_question_the_closed_book_model_already_answers():
    questions = [Question("Who won?", "the Denver Broncos"), Question("Where is Paris?", "France")]
    closed_book = ["I do not know.", "Paris is in France."]
    assert qa.unanswered(questions, closed_book) == questions[:1]


def test_self_questions_are_written_once_answered_in_context_and_filtered(tiny_lm, tmp_path, monkeypatch):
    """The step after the question lists are written (filed as a resumed run finds them): each question
    answered in context `samples` times, its reference kept as `references` decides, then `unanswered`;
    filed, and read back without generating again."""
    import torch
    from rich.console import Console

    from seal.cluster import LocalExecutor
    from seal.config import KnowledgeTrainConfig, SamplingConfig
    from seal.experiments.knowledge_steps import KnowledgeSteps
    from seal.experiments.steps import stable_seed
    from seal.store import RunStore, key

    cfg = KnowledgeTrainConfig(answer={"stop_at_newline": False})  # the random model's first line is empty
    store = RunStore(tmp_path / "run", cfg)
    steps = KnowledgeSteps.for_config(cfg, store, LocalExecutor(lambda: tiny_lm), Console(quiet=True))
    written = ["1. Who won?\n2. Which game?", "- Who won?\nnothing asked"]
    prompt = knowledge.self_edit_prompt(PASSAGE, knowledge.PROBES, chat=False)
    lists = [(key("sq/questions", PASSAGE.key, i), {"prompt": prompt, "text": t}) for i, t in enumerate(written)]
    sampling = SamplingConfig(k=2, temperature=1.0)
    with store:
        store.put_many("self_edits", lists)
        found = steps.self_questions("sq", [PASSAGE], sampling, samples=2, agree=1)
        asked = ["Who won?", "Which game?", "Who won?"]
        torch.manual_seed(stable_seed(cfg.seed, "self-questions", PASSAGE.key))
        prompts = [knowledge.probe_answer_prompt(tiny_lm, PASSAGE, q) for q in asked for _ in range(2)]
        answers = generate(tiny_lm, prompts, max_new_tokens=cfg.answer.max_new_tokens, temperature=1.0)
        refs = qa.references(PASSAGE, [(q, answers[2 * i : 2 * i + 2]) for i, q in enumerate(asked)], 1)
        closed = [knowledge.answer_prompt(tiny_lm, PASSAGE, q) for q in refs]
        closed_book = generate(tiny_lm, closed, max_new_tokens=cfg.answer.max_new_tokens)
        assert [q.question for q in refs] == ["Who won?", "Which game?"]  # "Who won?" once
        assert found == {PASSAGE.key: qa.unanswered(refs, closed_book)} and found[PASSAGE.key]
        monkeypatch.setattr("seal.experiments.knowledge_steps.generate", None)  # read back, not generated again
        assert steps.self_questions("sq", [PASSAGE], sampling, samples=2, agree=1) == found


def test_training_passages_need_no_questions_under_the_self_reward(tmp_path):
    from seal.config import KnowledgeTrainConfig
    from seal.errors import DataError
    from seal.experiments.knowledge_train import training_passages

    data = tmp_path / "unlabelled.json"
    data.write_text('[{"title": "Notes", "context": "The observatory opened in 1921.", "questions": []}]')
    cfg = KnowledgeTrainConfig(train_data=str(data), train_passages=1, reward_questions="self")
    assert [p.title for p in training_passages(cfg)[0]] == ["Notes"]
    with pytest.raises(DataError, match="no questions"):
        training_passages(cfg.model_copy(update={"reward_questions": "gold"}))
