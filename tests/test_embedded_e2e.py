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
    from seal.engine.sampling import generate

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
    run.executor.source.lm = embedded  # the module's model, not a second copy
    results = run.run()
    conditions = results["conditions"]
    assert conditions["passage"]["gain"] > 0
    assert conditions["file"]["gain"] > 0
    assert conditions["file"]["n_self_edits"] == 2
    first = json.loads((tmp_path / "run" / "records.jsonl").read_text().splitlines()[0])
    assert first["answer"] and first["answer_before"]


def test_bf16_and_fp32_agree_on_greedy_answers_and_likelihoods(embedded, shared_data):
    """Mixed precision is safe here: same greedy answers on a fixed example, gold log-likelihoods within 5%."""
    import torch

    from seal.engine.sampling import continuation_logprobs, generate
    from seal.experiments.knowledge_steps import probes_for

    fp32 = load_model("embedded", dtype="float32")
    bf16 = load_model("embedded", dtype="bfloat16")
    assert fp32.dtype == torch.float32 and bf16.dtype == torch.bfloat16
    passage = knowledge.paper_subset(knowledge.load_passages(shared_data / "squad" / "squad_val.json"), 1)[0]
    probes = probes_for(fp32, passage, in_context=True)[:3]
    answers = [generate(lm, [p.prompt for p in probes], max_new_tokens=12, stop_at_newline=True) for lm in (fp32, bf16)]
    assert answers[0] == answers[1]
    scores = [
        continuation_logprobs(lm, [p.prompt for p in probes], [p.continuation for p in probes]) for lm in (fp32, bf16)
    ]
    for (lp32, _), (lp16, _) in zip(*scores):
        assert abs(lp32 - lp16) <= 0.05 * abs(lp32)
