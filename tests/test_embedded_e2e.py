"""End to end on the real embedded model (SmolLM2-135M-Instruct), small settings. Always run in CI."""

import json

import pytest

from seal.config import KnowledgeEvalConfig
from seal.domains import knowledge
from seal.experiments.knowledge_eval import KnowledgeEval
from seal.models import load_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def embedded():
    return load_model("embedded")


def test_embedded_model_loads_and_answers(embedded):
    assert embedded.model.config.model_type == "llama" and embedded.model.config.num_hidden_layers == 30
    assert sum(p.numel() for p in embedded.model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    prompt = embedded.format_prompt("What is the capital of France? Answer in one word.")
    from seal.sampling import generate

    assert "paris" in generate(embedded, [prompt], max_new_tokens=8)[0].lower()


def test_training_on_the_passage_raises_gold_answer_likelihood(shared_data, tmp_path, embedded, monkeypatch):
    """The paper's passage-only condition and GPT-4.1's self-edits, on 2 evaluation passages."""
    cfg = KnowledgeEvalConfig(
        data=str(shared_data / "squad" / "squad_val.json"),
        passages=2,
        conditions=["base", "passage", "file"],
        self_edits_file=str(shared_data / "squad" / "synthetic" / "eval" / "gpt4_1_val.json"),
        reward="loglik",
    )
    cfg.adapt.epochs = 4
    run = KnowledgeEval(cfg, tmp_path / "run")
    run.lm = embedded
    results = run.run()
    conditions = results["conditions"]
    assert conditions["passage"]["gain"] > 0
    assert conditions["file"]["gain"] > 0
    assert conditions["file"]["n_self_edits"] == 2
    first = json.loads((tmp_path / "run" / "records.jsonl").read_text().splitlines()[0])
    assert first["answer"] and first["answer_before"]
