"""Context distillation (`adapt.objective: distill`): the teacher's inputs, the loss, and what training does."""

import pytest
import torch
from pydantic import ValidationError

from seal.config import AdaptConfig, ArcEvalConfig, KnowledgeCPTConfig, LoraConfig
from seal.engine.adapters import AdapterBank
from seal.engine.distill import Distilled, TeacherTargets, teacher_targets, token_terms
from seal.engine.training import TrainJob, _packed_losses, tokenize_documents, train_adapters

CONTEXT = "Topic: Geography. The capital of France is Paris; the Seine flows through it.\n\n"
FACT = Distilled("The capital of France is Paris.", CONTEXT)
PASSAGE = "The Denver Broncos won Super Bowl 50."


def cfg(**kw) -> AdaptConfig:
    return AdaptConfig(**{"lora": LoraConfig(rank=4, alpha=8), "epochs": 6, "lr": 1e-2, "objective": "distill", **kw})


def randomised_bank(lm, slots: int = 1) -> AdapterBank:
    """A bank whose slots already move the model (a fresh adapter is the base model exactly)."""
    bank = AdapterBank.attach(lm.model, LoraConfig(rank=4, alpha=8), slots)
    torch.manual_seed(3)
    with torch.no_grad():
        bank.flat.normal_(0, 0.2)
    return bank


def test_teacher_reads_the_context_and_the_student_does_not(tiny_lm):
    """Token ids reaching the model: the teacher's pass (no adapter routed) holds the context's ids followed
    by the document's own ids; every training pass (routed to a slot) holds the document's ids alone."""
    tok = tiny_lm.tokenizer
    context_ids, doc_ids = tok(CONTEXT).input_ids, tok(FACT.text).input_ids
    bank = AdapterBank.attach(tiny_lm.model, LoraConfig(rank=4, alpha=8), 1)
    seen = []
    forward = tiny_lm.model.forward

    def recording(*args, **kwargs):
        seen.append((kwargs["input_ids"][0].tolist(), bank.routing.ids))
        return forward(*args, **kwargs)

    tiny_lm.model.forward = recording
    train_adapters(tiny_lm, bank, [TrainJob([FACT], seed=0)], cfg(epochs=2))
    (teacher, no_slot), *student = seen
    assert no_slot is None
    assert teacher == context_ids + doc_ids
    assert len(student) == 2
    assert all(ids == doc_ids and slots is not None for ids, slots in student)


def test_distillation_loss_equals_the_value_computed_by_hand(tiny_lm):
    """One step of one slot over a distilled document and a plain one: the engine's loss against the formula
    written out over plain (unpacked) forward passes."""
    k, weight = 5, 0.7
    bank = randomised_bank(tiny_lm)
    tok, model = tiny_lm.tokenizer, tiny_lm.model
    context_ids, doc_ids = tok(CONTEXT).input_ids, tok(FACT.text).input_ids
    plain_ids = tok(PASSAGE).input_ids
    settings = cfg(distill_top_k=k, distill_weight=weight)
    documents = tokenize_documents(tiny_lm, [FACT, PASSAGE], settings)
    (targets,), _ = teacher_targets(tiny_lm, bank, [(CONTEXT, *documents[0])], k, per_pass=4)
    engine = _packed_losses(tiny_lm, bank, [0], [documents], targets=[[targets, None]], distill_weight=weight)

    with torch.no_grad():
        with bank.route(None):
            teacher = model(input_ids=torch.tensor([context_ids + doc_ids])).logits[0, len(context_ids) - 1 : -1]
        with bank.route([0]):
            student = model(input_ids=torch.tensor([doc_ids])).logits[0, :-1].log_softmax(-1)
            passage = model(input_ids=torch.tensor([plain_ids])).logits[0, :-1].log_softmax(-1)
    # tiny's tokenizer adds no special token: the student predicts doc_ids[1:], the teacher doc_ids[0:] too
    top, ids = teacher[1:].topk(k, dim=-1)
    p = top.softmax(-1)
    kl = (p * (p.log() - student.gather(1, ids))).sum(-1)
    nll = -student.gather(1, torch.tensor(doc_ids[1:])[:, None]).squeeze(1)
    passage_nll = -passage.gather(1, torch.tensor(plain_ids[1:])[:, None]).squeeze(1)
    by_hand = ((weight * kl + (1 - weight) * nll).sum() + passage_nll.sum()) / (len(nll) + len(passage_nll))
    assert engine.item() == pytest.approx(by_hand.item(), rel=1e-4)
    torch.testing.assert_close(targets.ids, ids)
    assert targets.positions.tolist() == list(range(len(doc_ids) - 1))


def test_weight_zero_is_next_token_training(tiny_lm):
    """distill_weight 0: the same losses as sft on the document's text (the teacher pass changes nothing)."""
    bank = AdapterBank.attach(tiny_lm.model, LoraConfig(rank=4, alpha=8), 1)
    distilled = train_adapters(tiny_lm, bank, [TrainJob([FACT, PASSAGE], seed=1)], cfg(distill_weight=0.0))
    sft = train_adapters(tiny_lm, bank, [TrainJob([FACT.text, PASSAGE], seed=1)], cfg(objective="sft"))
    as_sft = train_adapters(tiny_lm, bank, [TrainJob([FACT, PASSAGE], seed=1)], cfg(objective="sft"))
    assert distilled.losses[0] == pytest.approx(sft.losses[0], rel=1e-4)
    assert as_sft.losses[0] == sft.losses[0]
    assert distilled.teacher_tokens > 0 and sft.teacher_tokens == 0


def divergence(lm, bank: AdapterBank, targets: TeacherTargets, ids: list[int], slot: int | None) -> float:
    """Mean KL(teacher || model) over the document's trained tokens, with the adapter in `slot` (None: none)."""
    with torch.no_grad(), bank.route(None if slot is None else [slot]):
        logits = lm.model(input_ids=torch.tensor([ids])).logits[0]
    labels = torch.tensor(ids[1:] + [-100])
    return token_terms(logits, labels, targets.positions, targets.ids, targets.logprobs)[0].mean().item()


@pytest.fixture
def reading_lm(tiny_lm):
    """The tiny model with its attention's values scaled up (what it reads earlier moves its predictions;
    at random initialisation a context hardly does) and its embedding too (peaked next-token distributions)."""
    with torch.no_grad():
        tiny_lm.model.get_input_embeddings().weight.mul_(10)
        for name, weight in tiny_lm.model.named_parameters():
            if "v_proj" in name or "o_proj" in name:
                weight.mul_(5)
    return tiny_lm


def test_training_with_distill_lowers_the_students_divergence_from_the_teacher(reading_lm):
    """Slot 0 distils the fact, slot 1 trains on its text (both with the passage document, next-token):
    distillation brings the model reading the fact alone closer to the model reading it after its context."""
    settings = cfg(epochs=10)
    bank = AdapterBank.attach(reading_lm.model, settings.lora, 2)
    ((ids, loss),) = tokenize_documents(reading_lm, [FACT], settings)
    (targets,), _ = teacher_targets(reading_lm, bank, [(CONTEXT, ids, loss)], settings.distill_top_k, per_pass=1)
    before = divergence(reading_lm, bank, targets, ids, None)
    jobs = [TrainJob([FACT, PASSAGE], seed=0), TrainJob([FACT.text, PASSAGE], seed=0)]
    stats = train_adapters(reading_lm, bank, jobs, settings)
    distilled, sft = divergence(reading_lm, bank, targets, ids, 0), divergence(reading_lm, bank, targets, ids, 1)
    assert distilled < 0.6 * before
    assert distilled < sft
    # the teacher read each distilled document once (context and document), not once per epoch
    assert stats.teacher_tokens == len(reading_lm.tokenizer(CONTEXT).input_ids) + len(ids)


@pytest.mark.parametrize(
    "settings, field",
    [
        ({"objective": "kd"}, "objective"),
        ({"distill_top_k": 0}, "distill_top_k"),
        ({"distill_weight": 1.5}, "distill_weight"),
        ({"distill_weight": -0.1}, "distill_weight"),
        ({"objective": "distill", "engine": "peft"}, "engine: batched"),
    ],
)
def test_distill_settings_are_checked(settings, field):
    with pytest.raises(ValidationError) as err:
        AdaptConfig(**settings)
    assert err.value.error_count() == 1
    assert field in str(err.value)


@pytest.mark.parametrize(
    "config, settings, says",
    [
        (ArcEvalConfig, {}, "an ARC plan has no passage"),
        (KnowledgeCPTConfig, {"method": "full"}, "method: full trains sft"),
    ],
)
def test_distill_is_refused_where_no_adapter_distils(config, settings, says):
    with pytest.raises(ValidationError, match=says):
        config(adapt={"objective": "distill"}, **settings)
    assert config(adapt={"objective": "sft"}, **settings).adapt.objective == "sft"
