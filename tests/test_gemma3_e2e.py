"""End to end on the second packaged model, Gemma 3 270M (pretrained, not instruct): completion-style prompts,
a sliding-window architecture with a 262k vocabulary. Small settings; always run in CI."""

import json
import re

import pytest

from seal.config import KnowledgeEvalConfig
from seal.experiments.knowledge_eval import KnowledgeEval
from seal.models import load_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gemma():
    return load_model("gemma3-270m")


def test_gemma3_loads_as_a_base_model_and_continues_text(gemma):
    assert gemma.model.config.model_type == "gemma3_text" and not gemma.chat
    assert sum(p.numel() for p in gemma.model.parameters()) == pytest.approx(268e6, rel=0.01)
    from seal.engine.sampling import generate

    (text,) = generate(gemma, [gemma.format_prompt("The capital of France is")], max_new_tokens=12)
    words = re.findall(r"\w+", text.lower())
    assert "france" in words and len(set(words)) > len(words) / 2  # on topic, not a loop


def test_gemma3_learns_a_fictional_passage_from_its_own_self_edit(gemma, tmp_path):
    """One invented-fact passage: closed-book the model cannot know it; trained on the passage, or on its own
    implications (a readable completion, not a loop), the gold answers become more likely."""
    cfg = KnowledgeEvalConfig(
        model={"name": "gemma3-270m"},
        data="data/fictional/val.json",
        passages=1,
        paper_subset=False,
        conditions=["base", "in-context", "passage", "implications"],
        reward="loglik",
    )
    cfg.sampling.k, cfg.sampling.max_new_tokens, cfg.adapt.epochs = 1, 96, 5
    run = KnowledgeEval(cfg, tmp_path / "run")
    run.executor.source.lm = gemma
    conditions = run.run()["conditions"]
    assert conditions["base"]["macro"]["verdict"] == 0.0
    assert conditions["in-context"]["macro"]["verdict"] > 0.0
    assert conditions["passage"]["gain"] > 0 and conditions["implications"]["gain"] > 0
    records = [json.loads(line) for line in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    (self_edit,) = [r["self_edit"] for r in records if r["condition"] == "implications" and r.get("self_edit")]
    words = self_edit.lower().split()
    assert len(words) >= 10 and len(set(words)) >= 0.4 * len(words), self_edit
