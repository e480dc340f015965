import pytest

from seal.config import AdaptConfig, AnswerConfig, LoraConfig
from seal.engine.loop import AdaptJob, adapt_batch, job_batches, work_batches
from seal.experiments.qa import Probe, QuestionScorer

FACTS = [
    ["The Denver Broncos won Super Bowl 50.", "Levi's Stadium is in Santa Clara."],
    ["The capital of France is Paris.", "The Seine flows through Paris.", "Paris is in France."],
    ["A list of facts follows."],
    [],  # a self-edit that gave nothing to train on still gets scored (as the base model)
]


def jobs() -> list[AdaptJob]:
    probe = Probe(
        "Who won Super Bowl 50?", "the Denver Broncos", "Q: Who won Super Bowl 50?\nA:", " the Denver Broncos"
    )
    return [AdaptJob(f"job/{i}", docs, [probe], seed=i) for i, docs in enumerate(FACTS)]


def test_refilled_slots_score_every_adapter_as_a_slot_of_its_own_would(tiny_lm):
    """2 slots taking 4 plans in turn (scored 2 at a time, mid-training) == 4 slots, one plan each."""
    answer = QuestionScorer(AnswerConfig(max_new_tokens=6))
    cfg = {"lora": LoraConfig(rank=4, alpha=8), "epochs": 3, "lr": 1e-2}
    if hasattr(tiny_lm.model, "_seal_bank"):
        tiny_lm.model._seal_bank.detach()
    refilled = adapt_batch(tiny_lm, jobs(), AdaptConfig(slots=2, refill=2, **cfg), answer)
    tiny_lm.model._seal_bank.detach()
    one_each = adapt_batch(tiny_lm, jobs(), AdaptConfig(slots=4, refill=1, **cfg), answer)
    assert [r.key for r in refilled] == [f"job/{i}" for i in range(4)]
    for a, b in zip(refilled, one_each):
        assert a.steps == b.steps == 3 * len(FACTS[int(a.key[-1])])
        assert a.probes[0]["answer"] == b.probes[0]["answer"]
        assert a.probes[0]["logprob"] == pytest.approx(b.probes[0]["logprob"], abs=1e-4)
    # the adapters differ from one another, so a mix-up of slots would show
    assert len({round(r.probes[0]["logprob"], 4) for r in refilled}) == 4


def test_a_unit_of_work_is_slots_times_refill_plans():
    units = work_batches(jobs() * 3, AdaptConfig(slots=2, refill=3))
    assert [len(u) for u in units] == [6, 6]


def test_plans_are_grouped_by_the_optimiser_steps_they_take():
    """ARC self-edits choose their epochs: 2 documents x 5 epochs is longer than 4 documents x 1."""
    from types import SimpleNamespace

    plans = [
        SimpleNamespace(key=f"p{i}", documents=["d"] * n, epochs=e)
        for i, (n, e) in enumerate([(4, 1), (2, 5), (3, 1), (1, 6)])
    ]
    by_documents = job_batches(plans, 2)
    by_steps = job_batches(plans, 2, steps=lambda p: len(p.documents) * p.epochs)
    assert [[p.key for p in b] for b in by_documents] == [["p0", "p2"], ["p1", "p3"]]
    assert [[p.key for p in b] for b in by_steps] == [["p1", "p3"], ["p0", "p2"]]
    assert job_batches(plans, 2, skip={"p1", "p3"}, steps=lambda p: len(p.documents) * p.epochs) == [by_steps[1]]
