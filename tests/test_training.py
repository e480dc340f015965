import pytest
import torch

from conftest import build_tiny_model
from seal.config import AdaptConfig, LoraConfig
from seal.engine.adapters import AdapterBank
from seal.engine.packing import pack, packed_forward
from seal.engine.sampling import continuation_logprobs
from seal.engine.training import TrainJob, train_adapters

DOCS = [
    ["The Denver Broncos won Super Bowl 50.", "Levi's Stadium is in Santa Clara."],
    ["The capital of France is Paris.", "The Seine flows through Paris.", "Paris is in France."],
    ["A list of facts follows."],
]


def small_cfg(**kw) -> AdaptConfig:
    return AdaptConfig(**{"lora": LoraConfig(rank=4, alpha=8), "epochs": 3, "lr": 1e-2, **kw})


def test_packed_forward_matches_separate_forwards(tiny_lm):
    tok = tiny_lm.tokenizer
    seqs = [
        (tok(d).input_ids, [True] * len(tok(d).input_ids)) for d in ["The capital of France", "Paris is in France."]
    ]
    batch = pack(seqs, torch.device("cpu"))
    with packed_forward(tiny_lm.model, batch["lengths"]):
        packed = tiny_lm.model(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
        ).logits[0]
    separate = torch.cat([tiny_lm.model(input_ids=torch.tensor([ids])).logits[0] for ids, _ in seqs])
    torch.testing.assert_close(packed, separate, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_grouped_and_block_masked_adapter_paths_agree(tiny_lm, monkeypatch, dtype):
    """Packed sequences through their own slots by grouped matmuls (where torch has them) or by the
    block mask (elsewhere): the same outputs and the same adapter gradients."""
    import seal.engine.adapters

    bank = AdapterBank(tiny_lm.model, LoraConfig(rank=8, alpha=16), slots=3)
    torch.manual_seed(0)
    with torch.no_grad():
        bank.flat.normal_(0, 0.1)
    tok = tiny_lm.tokenizer
    seqs = [
        (tok(d).input_ids, [True] * len(tok(d).input_ids))
        for d in ["The capital of France", "Paris is in France.", "Who won?"]
    ]
    batch = pack(seqs, torch.device("cpu"))
    layer = next(iter(bank.layers.values()))
    assert seal.engine.adapters._grouped_mm_works(
        torch.device("cpu"), dtype, layer.lora_A.shape[-1], 8, layer.lora_B.shape[1]
    )

    def run():
        bank.flat_grad.zero_()
        for p in bank.parameters():
            p.requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            with bank.route([2, 0, 1], batch["lengths"]), packed_forward(tiny_lm.model, batch["lengths"]):
                logits = tiny_lm.model(
                    input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
                ).logits
        logits.float().square().mean().backward()
        return logits.detach().float(), bank.flat_grad.clone()

    grouped = run()
    monkeypatch.setattr(seal.engine.adapters, "_grouped_mm_works", lambda *args: False)
    masked = run()
    tolerance = {"atol": 1e-5, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 2e-2, "rtol": 2e-2}
    torch.testing.assert_close(grouped[0], masked[0], **tolerance)
    torch.testing.assert_close(grouped[1], masked[1], **tolerance)
    assert grouped[1].abs().sum() > 0
    bank.detach()


def test_training_changes_only_adapters_and_lowers_loss(tiny_lm):
    base_state = {k: v.clone() for k, v in tiny_lm.model.state_dict().items()}
    cfg = small_cfg()
    bank = AdapterBank.attach(tiny_lm.model, cfg.lora, slots=3)
    stats = train_adapters(tiny_lm, bank, [TrainJob(d, seed=i) for i, d in enumerate(DOCS)], cfg)
    for k, v in tiny_lm.model.state_dict().items():
        if "lora_" not in k:
            torch.testing.assert_close(v, base_state[k.replace(".base.", ".")], rtol=0, atol=0)
    for j, docs in enumerate(DOCS):
        first, last = stats.first_last(j)
        assert len(stats.losses[j]) == len(docs) * cfg.epochs
        assert last < first
    assert all(layer.lora_B.abs().sum() > 0 for layer in bank.layers.values())


ARC_LIKE = [("Question: Who won?\nAnswer:", " the Denver Broncos"), ("Topic: Geography.", " Paris")]


@pytest.mark.parametrize("slots", [3, 2], ids=["one-slot-each", "slots-refilled"])
@pytest.mark.parametrize(
    "cfg, jobs",
    [
        (small_cfg(), [TrainJob(d, seed=10 + i) for i, d in enumerate(DOCS)]),
        # ARC-style: completion-only documents, per-job lr/epochs, batch 2, cosine with warm-up.
        (
            small_cfg(batch_size=2, schedule="cosine", warmup_ratio=0.25),
            [
                TrainJob(DOCS[0] + ARC_LIKE, seed=1, lr=5e-3, epochs=2),
                TrainJob(ARC_LIKE, seed=2, epochs=4),
                TrainJob(DOCS[1], seed=3),
            ],
        ),
    ],
    ids=["paper-knowledge", "batch2-cosine-per-job"],
)
def test_adapters_trained_together_match_adapters_trained_alone(tiny_lm, cfg, jobs, slots):
    """With fewer slots than jobs, a slot whose job is done takes the next one mid-run: each adapter
    still ends as training it alone leaves it."""
    if hasattr(tiny_lm.model, "_seal_bank"):
        tiny_lm.model._seal_bank.detach()  # a bank of exactly `slots`
    bank = AdapterBank.attach(tiny_lm.model, cfg.lora, slots)
    trained = {}
    together = train_adapters(tiny_lm, bank, jobs, cfg, lambda slot, j: trained.setdefault(j, bank.state_dict(slot)))
    assert sorted(trained) == list(range(len(jobs)))
    for i, job in enumerate(jobs):
        alone = train_adapters(tiny_lm, bank, [job], cfg)
        for key, value in bank.state_dict(0).items():
            torch.testing.assert_close(value, trained[i][key], atol=1e-5, rtol=1e-4)
        assert alone.losses[0] == pytest.approx(together.losses[i], rel=1e-4, abs=1e-5)


def test_routing_scores_each_row_with_its_own_adapter(tiny_lm):
    cfg = small_cfg(epochs=8)
    bank = AdapterBank.attach(tiny_lm.model, cfg.lora, slots=2)
    train_adapters(tiny_lm, bank, [TrainJob(DOCS[0], 1), TrainJob(DOCS[1], 2)], cfg)
    prompts, conts = ["The capital of France is", "The capital of France is"], [" Paris.", " Paris."]
    base = continuation_logprobs(tiny_lm, prompts, conts)
    routed = continuation_logprobs(tiny_lm, prompts, conts, bank=bank, slots=[0, 1])
    alone1 = continuation_logprobs(tiny_lm, prompts[:1], conts[:1], bank=bank, slots=[1])
    assert routed[1][0] > base[1][0]  # the adapter trained on the Paris facts made them likelier
    assert routed[1][0] == pytest.approx(alone1[0][0], abs=1e-4)
    assert routed[0][0] != pytest.approx(routed[1][0], abs=1e-3)


def test_train_flops_count_each_frozen_weight_once_and_only_the_tokens_own_slot(tiny_lm):
    """The benchmark's FLOP accounting: K slots cost a token no more useful work than one, and
    one slot's weights are the weights of one peft adapter."""
    from seal.engine.plain import fresh_peft_model

    cfg = small_cfg()
    frozen = sum(p.numel() for p in tiny_lm.model.parameters())  # the tied head: the embedding's one matmul
    per_k = []
    for slots in (1, 3):
        bank = AdapterBank.attach(tiny_lm.model, cfg.lora, slots)
        per_k.append(bank.train_flops_per_token())
        bank.detach()
    trainable, _ = fresh_peft_model(tiny_lm, 0, cfg).get_nb_trainable_parameters()
    assert trainable > 0
    assert per_k == [4 * frozen + 6 * trainable] * 2
    # Untied (as Qwen2.5-7B): the input embedding is a lookup and costs nothing.
    untied = build_tiny_model(tiny_lm.model.config.vocab_size, tied=False)
    lookup = untied.get_input_embeddings().weight.numel()
    untied_frozen = sum(p.numel() for p in untied.parameters()) - lookup
    assert AdapterBank(untied, cfg.lora, 2).train_flops_per_token() == 4 * untied_frozen + 6 * trainable


@pytest.mark.parametrize(
    "settings",
    [{}, {"batch_size": 2, "grad_accum": 2}, {"grad_accum": 2, "schedule": "cosine", "warmup_ratio": 0.3}],
    ids=["paper-knowledge", "batch2-accumulate2", "accumulate2-cosine"],
)
def test_batched_engine_matches_a_plain_peft_adapter_trained_alone(tiny_lm, settings):
    """Same init, same document order, same optimiser: the engine's slot equals the straightforward way,
    HF Trainer's way of batching (a padded batch's loss is the mean over its trained tokens) and of
    accumulating gradients (each forward pass's loss divided by the passes per optimiser step) included."""
    from seal.engine.plain import fresh_peft_model, train_peft_adapter

    cfg, docs = small_cfg(**settings), DOCS[1]
    fresh = fresh_peft_model(tiny_lm, 7, cfg)
    peft_init = {k: v.clone() for k, v in fresh.state_dict().items() if "lora_A" in k}
    fresh.unload()
    trained, peft_losses = train_peft_adapter(tiny_lm, docs, seed=7, cfg=cfg)
    peft_trained = {k: v.clone() for k, v in trained.state_dict().items() if "lora_B" in k}
    trained.unload()

    bank = AdapterBank.attach(tiny_lm.model, cfg.lora, slots=2)
    engine_reset = bank.reset

    def reset_to_peft_init(slot, seed):  # start from peft's initial A (B is zero in both)
        engine_reset(slot, seed)
        with torch.no_grad():
            for name, layer in bank.layers.items():
                layer.lora_A[slot].copy_(peft_init[f"base_model.model.{name}.lora_A.default.weight"])

    bank.reset = reset_to_peft_init
    stats = train_adapters(tiny_lm, bank, [TrainJob(docs, seed=7)], cfg)
    assert stats.losses[0] == pytest.approx(peft_losses, rel=1e-3, abs=1e-4)
    for name, layer in bank.layers.items():
        expected = peft_trained[f"base_model.model.{name}.lora_B.default.weight"]
        torch.testing.assert_close(layer.lora_B[0], expected, atol=1e-4, rtol=1e-3)


def test_loss_after_a_marker_trains_only_on_what_follows_it(tiny_lm):
    """The release's end_mask_substring: the tokens up to the marker carry no loss; a document
    without the marker is trained on whole."""
    from seal.engine.training import tokenize_documents

    cfg = small_cfg(loss_after="Answer:")
    (ids, keep), (plain_ids, plain_keep) = tokenize_documents(
        tiny_lm, ["Question: Who won?\nAnswer: the Denver Broncos", "The capital of France is Paris."], cfg
    )
    trained = tiny_lm.tokenizer.decode([t for t, k in zip(ids, keep) if k])
    assert trained.strip() == "the Denver Broncos"
    assert not any(keep[: len(tiny_lm.tokenizer("Question: Who won?\nAnswer:").input_ids)])
    assert all(plain_keep) and len(plain_keep) == len(plain_ids)
