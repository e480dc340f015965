"""The engine at paper scale: known shapes built with random weights, and `adapt.slots: auto`."""

from __future__ import annotations

import pytest
import torch

from conftest import build_tokenizer
from seal.config import AdaptConfig, AnswerConfig, LoraConfig
from seal.engine.adapters import AdapterBank
from seal.engine.loop import AdaptJob, adapt_and_score
from seal.engine.planner import plan_slots, resolved, step_peak_bytes
from seal.engine.shapes import SHAPES, random_model, shape
from seal.engine.training import TrainJob, bucket, train_adapters
from seal.experiments.qa import Probe, QuestionScorer

SMALL = {"num_hidden_layers": 1, "hidden_size": 64, "intermediate_size": 128}


def test_known_shapes_have_their_published_sizes():
    billions = {name: s.parameters() / 1e9 for name, s in SHAPES.items()}
    assert billions["llama-3.2-1b"] == pytest.approx(1.24, abs=0.01)
    assert billions["qwen2.5-7b"] == pytest.approx(7.62, abs=0.01)
    assert billions["llama-3.1-8b"] == pytest.approx(8.03, abs=0.01)
    with pytest.raises(ValueError, match="known: smollm2-135m"):
        shape("gpt-5")


@pytest.mark.parametrize("name", ["llama-3.2-1b", "qwen2.5-7b"])
def test_a_scaled_down_shape_trains_in_the_engine(name):
    tok = build_tokenizer()
    lm = random_model(name, tok, **SMALL)
    full = shape(name).config(len(tok))
    assert lm.model.config.num_attention_heads == full.num_attention_heads  # only the overrides differ
    assert lm.model.config.rope_parameters == full.rope_parameters
    assert lm.model.get_input_embeddings().weight.shape == (len(tok), 64)
    bank = AdapterBank.attach(lm.model, LoraConfig(rank=4), 2)
    jobs = [TrainJob(["The Denver Broncos won Super Bowl 50."], seed=s) for s in range(2)]
    stats = train_adapters(lm, bank, jobs, AdaptConfig(epochs=3, lr=1e-2, slots=2))
    assert all(losses[-1] < losses[0] for losses in stats.losses)
    assert bank.train_flops_per_token() > 4 * 64 * len(tok)  # the head's matmul at least


def test_step_memory_grows_by_a_slot_at_a_time(tiny_lm):
    cfg = AdaptConfig(slots="auto", max_doc_tokens=32, lora=LoraConfig(rank=4))
    peaks = [step_peak_bytes(tiny_lm, cfg, k) for k in (1, 2, 4)]
    assert peaks[0] < peaks[1] < peaks[2]
    assert peaks[2] - peaks[1] == pytest.approx(2 * (peaks[1] - peaks[0]), rel=0.1)  # a line
    assert AdapterBank.installed(tiny_lm.model) is None  # measured on banks of its own


def test_a_larger_budget_plans_more_slots_and_too_small_a_budget_is_one_error(tiny_lm):
    cfg = AdaptConfig(slots="auto", max_doc_tokens=32, lora=LoraConfig(rank=4))
    small = plan_slots(tiny_lm, cfg, 2**20)
    large = plan_slots(tiny_lm, cfg, 2**22)
    assert 1 <= small.slots < large.slots
    assert large.fixed_bytes + large.per_slot_bytes * large.slots <= 2**22
    assert large.fixed_bytes + large.per_slot_bytes * (large.slots + 1) > 2**22
    assert plan_slots(tiny_lm, cfg.model_copy(update={"max_auto_slots": 3}), 2**30).slots == 3
    with pytest.raises(ValueError, match="one slot needs .* GiB, over the memory budget of 0.00 GiB"):
        plan_slots(tiny_lm, cfg, 1000)


def test_slots_auto_is_resolved_once_where_the_bank_is_built(tiny_lm):
    cfg = AdaptConfig(slots="auto", memory_budget_gib=2**22 / 2**30, max_doc_tokens=32, epochs=1)
    with pytest.raises(ValueError, match="resolve it on the model first"):
        _ = cfg.unit
    chosen = resolved(tiny_lm, cfg)
    assert isinstance(chosen.slots, int) and chosen.slots >= 1
    assert resolved(tiny_lm, cfg) == chosen  # planned once: the second call measures nothing
    probe = Probe("Capital?", "Paris", "Q: Capital?\nA:", " Paris")
    jobs = [AdaptJob(f"j{i}", ["Paris is the capital of France."], [probe], i) for i in range(3)]
    results = [
        r
        for batch in adapt_and_score(tiny_lm, jobs, cfg, QuestionScorer(AnswerConfig(max_new_tokens=2)))
        for r in batch
    ]
    assert [r.key for r in results] == ["j0", "j1", "j2"]
    assert AdapterBank.installed(tiny_lm.model).slots >= min(chosen.slots, 3)


def test_slots_is_a_positive_int_or_auto():
    assert AdaptConfig(slots="auto").slots == "auto"
    for bad in (0, "many"):
        with pytest.raises(ValueError):
            AdaptConfig(slots=bad)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_planned_step_fits_on_the_gpu():
    tok = build_tokenizer()
    lm = random_model("llama-3.2-1b", tok, dtype=torch.bfloat16, device="cuda", **SMALL)
    cfg = AdaptConfig(slots="auto", max_doc_tokens=64)
    plan = plan_slots(lm, cfg, 2**28)
    assert step_peak_bytes(lm, cfg, plan.slots) <= 2**28


def test_packed_lengths_pad_to_few_buckets():
    assert [bucket(t) for t in (1, 64, 65, 97, 129, 300, 5000)] == [64, 64, 96, 128, 192, 384, 6144]
    assert len({bucket(t) for t in range(1, 16385)}) == 17  # within COMPILED_SHAPES
    assert all(bucket(t) <= max(64, 1.5 * t) for t in range(1, 5000))


def test_a_compiled_step_trains_as_the_eager_one(tiny_lm):
    jobs = [TrainJob(["The Denver Broncos won Super Bowl 50."], 0), TrainJob(["Paris is in France."], 1)]
    cfg = AdaptConfig(epochs=2, lr=1e-2, slots=2, lora=LoraConfig(rank=4))
    eager = train_adapters(tiny_lm, AdapterBank.attach(tiny_lm.model, cfg.lora, 2), jobs, cfg)
    AdapterBank.detach_from(tiny_lm.model)
    bank = AdapterBank.attach(tiny_lm.model, cfg.lora, 2)
    fast = train_adapters(tiny_lm, bank, jobs, cfg.model_copy(update={"compile": True}))
    for a, b in zip(eager.losses, fast.losses):
        assert b == pytest.approx(a, rel=1e-4)  # the second step too: the gradients were the same
    assert eager.tokens == fast.tokens  # the padding is not counted as trained
