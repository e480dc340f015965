"""A library of adapters: routing questions to the adapter of their passage, answering through a bank loaded
from saved adapters exactly as each adapter alone, exact mixtures, and the gate's decision rule."""

import copy
import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel

from seal.config import AnswerConfig, LoraConfig, RouterConfig
from seal.engine import routing
from seal.engine.adapters import AdapterBank, SavedAdapter
from seal.engine.sampling import continuation_logprobs
from seal.experiments.knowledge_continual import gate_scale
from seal.experiments.qa import Probe, score_probes
from seal.models import LoadedModel
from seal.policy import apply_adapter

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ["q_proj", "v_proj", "down_proj"]


def fictional(n: int) -> list[dict]:
    return json.loads((ROOT / "data" / "fictional" / "eval.json").read_text())[:n]


def test_routing_picks_the_adapter_of_the_passage_a_question_is_about():
    passages = fictional(8)
    keys = [[f"{p['title']}\n{p['context']}"] for p in passages]
    questions = [(i, q["question"]) for i, p in enumerate(passages) for q in p["questions"]]
    routes = routing.route(RouterConfig(), routing.minilm_embed, [q for _, q in questions], keys)
    assert [r.entries[0] for r in routes] == [i for i, _ in questions]
    # top-k: the k closest, best first, weights a softmax of their similarities
    (mixed,) = routing.route(RouterConfig(top_k=3, temperature=0.1), routing.minilm_embed, [questions[0][1]], keys)
    assert mixed.entries[0] == 0 and len(mixed.entries) == 3 and sum(mixed.weights) == pytest.approx(1.0)
    assert list(mixed.similarities) == sorted(mixed.similarities, reverse=True)
    assert mixed.weights[0] > mixed.weights[1] > mixed.weights[2]


def test_the_hidden_state_router_embeds_with_the_model_and_a_plan_key_counts_its_closest_document(tiny_lm):
    embed = routing.embedder("hidden", tiny_lm)
    vectors = embed(["The capital of France is Paris.", "Who won Super Bowl 50?", ""])
    assert vectors.shape == (3, 32) and torch.allclose(vectors.norm(dim=-1), torch.ones(3))
    # an entry is as close as its closest key text: the same text as a query is similarity 1
    sims = routing.similarities(embed, ["Who won Super Bowl 50?"], [["Paris"], ["Denver", "Who won Super Bowl 50?"]])
    assert sims[0, 1] == pytest.approx(1.0, abs=1e-5) and sims[0, 0] < 1.0


def saved_adapters(lm: LoadedModel, directory: Path, k: int) -> list[Path]:
    """K adapters with random weights (B too, so each changes the model), saved in peft format."""
    bank = AdapterBank(lm.model, LoraConfig(rank=4, alpha=8.0, targets=TARGETS), k)
    with torch.no_grad():
        bank.flat.copy_(torch.randn(bank.flat.shape, generator=torch.Generator().manual_seed(0)) * 0.3)
    paths = [bank.save(slot, directory / f"a{slot}", base_model="tiny") for slot in range(k)]
    bank.detach()
    return paths


def probes(lm: LoadedModel) -> list[Probe]:
    questions = [("Who won Super Bowl 50?", "the Denver Broncos"), ("What is the capital of France?", "Paris"),
                 ("Where is Levi's Stadium?", "Santa Clara"), ("What flows through Paris?", "the Seine")]  # fmt: skip
    return [Probe(q, a, f"Question: {q}\nAnswer:", " " + a) for q, a in questions]


def test_a_library_of_k_adapters_answers_each_question_as_that_adapter_alone(tiny_lm, tmp_path):
    paths = saved_adapters(tiny_lm, tmp_path, 3)
    asked = probes(tiny_lm)
    owner = [2, 0, 1, 0]  # the adapter each question is routed to
    cfg = AnswerConfig(max_new_tokens=6)
    alone = []
    for i, probe in enumerate(asked):
        model = PeftModel.from_pretrained(tiny_lm.model, str(paths[owner[i]]))
        alone += score_probes(LoadedModel(model, tiny_lm.tokenizer, "tiny", False), [probe], cfg)
        model.unload()
    adapters = {j: SavedAdapter.read(p) for j, p in enumerate(paths)}
    routes = [routing.Route((j,), (1.0,), (1.0,)) for j in owner]
    together = [{}] * len(asked)
    for rows, bank, slots in routing.routed_banks(tiny_lm, routes, adapters, slots=8):
        assert len(set(slots)) == 3  # one slot per distinct adapter, every row through its own
        for i, record in zip(rows, score_probes(tiny_lm, [asked[i] for i in rows], cfg, bank=bank, slots=slots)):
            together[i] = record
    for a, b in zip(alone, together):
        assert a["answer"] == b["answer"]
        assert a["logprob"] == pytest.approx(b["logprob"], abs=1e-4)
    assert alone[0]["logprob"] != alone[1]["logprob"]  # the adapters differ: the comparison means something


def test_a_mixture_is_the_exact_weighted_sum_of_the_adapters_updates(tiny_lm, tmp_path):
    paths = saved_adapters(tiny_lm, tmp_path, 2)
    adapters = [SavedAdapter.read(p) for p in paths]
    weights = [0.7, 0.3]
    reference = copy.deepcopy(tiny_lm.model)
    with torch.no_grad():
        for name, module in reference.named_modules():
            for adapter, w in zip(adapters, weights):
                if name in adapter.layers:
                    a, b = adapter.layers[name]
                    module.weight += w * adapter.scaling * (b @ a)
    asked = probes(tiny_lm)
    prompts, golds = [p.prompt for p in asked], [p.continuation for p in asked]
    expected = continuation_logprobs(LoadedModel(reference, tiny_lm.tokenizer, "tiny", False), prompts, golds)
    route = routing.Route((0, 1), tuple(weights), (0.9, 0.8))
    ((rows, bank, slots),) = routing.routed_banks(tiny_lm, [route] * len(asked), dict(enumerate(adapters)), 8)
    assert bank.cfg.rank == 8  # the two rank-4 adapters side by side
    mixed = continuation_logprobs(tiny_lm, prompts, golds, bank=bank, slots=slots)
    assert [lp for lp, _ in mixed] == pytest.approx([lp for lp, _ in expected], abs=1e-4)


def test_a_scaled_slot_answers_as_the_scaled_merge_the_gate_applies(tiny_lm, tmp_path):
    (path,) = saved_adapters(tiny_lm, tmp_path, 1)
    asked = probes(tiny_lm)
    prompts, golds = [p.prompt for p in asked], [p.continuation for p in asked]
    bank = AdapterBank.attach(tiny_lm.model, LoraConfig(rank=4, alpha=8.0, targets=TARGETS), 1)
    bank.load(0, [(SavedAdapter.read(path), 0.5)])
    in_slot = continuation_logprobs(tiny_lm, prompts, golds, bank=bank, slots=[0] * len(asked))
    apply_adapter(tiny_lm, path, 0.5)
    merged = continuation_logprobs(tiny_lm, prompts, golds)
    assert [lp for lp, _ in in_slot] == pytest.approx([lp for lp, _ in merged], abs=1e-4)


def test_loading_refuses_an_adapter_the_bank_cannot_hold(tiny_lm, tmp_path):
    (path,) = saved_adapters(tiny_lm, tmp_path, 1)
    adapter = SavedAdapter.read(path)
    for lora, message in [
        (LoraConfig(rank=2, targets=TARGETS), "do not fit a bank of rank 2"),
        (LoraConfig(rank=4, targets=["q_proj"]), "which this bank does not"),
    ]:
        bank = AdapterBank.attach(tiny_lm.model, lora, 1)
        with pytest.raises(ValueError, match=message):
            bank.load(0, [(adapter, 1.0)])
    with pytest.raises(ValueError, match="does not hold a readable peft adapter"):
        SavedAdapter.read(tmp_path / "nowhere")


def test_the_gate_merges_the_largest_scale_within_the_threshold_or_nothing():
    drops = {1.0: 0.30, 0.5: 0.08, 0.25: 0.01}
    assert gate_scale(drops, 0.5) == 1.0
    assert gate_scale(drops, 0.1) == 0.5
    assert gate_scale(drops, 0.05) == 0.25
    assert gate_scale(drops, 0.0) == 0.0  # every scale drops the probe score: rejected
    assert gate_scale({1.0: -0.2}, 0.0) == 1.0  # an update that raises the probe score is merged whole
