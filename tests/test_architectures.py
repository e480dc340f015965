"""The engine on every common architecture, each a tiny randomly initialised model built from its config.

Per architecture: K adapters trained together equal each trained alone and a plain peft adapter;
packed attention gives the logits of the sequences run one by one (sequences longer than the
sliding window included); batched scoring and generation route each row to its own adapter, and
a saved slot loads in peft; the policy's fine-tune merges and reloads. Architectures that cannot
run packed are refused with one clear error.
"""

from functools import cache

import pytest
import torch
from peft import PeftModel
from transformers import (
    FalconConfig,
    FalconForCausalLM,
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    GPT2LMHeadModel,
    GptOssConfig,
    GptOssForCausalLM,
    Lfm2Config,
    Lfm2ForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Olmo2Config,
    Olmo2ForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    PhimoeConfig,
    PhimoeForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from conftest import CORPUS, build_tokenizer
from seal import policy
from seal.config import ALL_PROJECTIONS, LoraConfig, PolicyConfig
from seal.engine.adapters import AdapterBank
from seal.engine.architectures import adapted_layers, resolve_targets
from seal.engine.packing import pack, packed_forward
from seal.engine.plain import fresh_peft_model, train_peft_adapter
from seal.engine.sampling import continuation_logprobs, generate
from seal.engine.training import TrainJob, train_adapters
from seal.models import LoadedModel
from test_training import small_cfg

WINDOW = 8  # sliding windows shorter than every test sequence, so they matter
COMMON = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    pad_token_id=0,
    eos_token_id=1,
    bos_token_id=None,
)
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}
GEMMA = dict(head_dim=8, query_pre_attn_scalar=8, sliding_window=WINDOW, final_logit_softcapping=30.0)
# name: (config class, model class, its own settings)
ARCHITECTURES = {
    "llama3": (LlamaConfig, LlamaForCausalLM, dict(rope_parameters=LLAMA3_ROPE)),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM, dict(use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1)),
    "mistral": (MistralConfig, MistralForCausalLM, dict(sliding_window=WINDOW)),
    "phi3": (Phi3Config, Phi3ForCausalLM, dict(sliding_window=WINDOW)),
    "gemma3": (Gemma3TextConfig, Gemma3ForCausalLM, dict(GEMMA, layer_types=["sliding_attention", "full_attention"])),
    "gemma2": (Gemma2Config, Gemma2ForCausalLM, dict(GEMMA, attn_logit_softcapping=50.0)),
    "olmo2": (Olmo2Config, Olmo2ForCausalLM, {}),
    # Attention sinks; its experts are stacked weights, not linear layers, so only attention is adapted.
    "gpt-oss": (
        GptOssConfig,
        GptOssForCausalLM,
        dict(head_dim=8, num_local_experts=4, num_experts_per_tok=2, sliding_window=WINDOW),
    ),
}
TARGETS = {"gpt-oss": ["q_proj", "k_proj", "v_proj", "o_proj"]}  # the rest: every projection

TEXTS = [CORPUS[0], f"{CORPUS[2]} {CORPUS[3]}", "Question: Who won the game?"]
DOCS = [[CORPUS[0], CORPUS[1]], [CORPUS[2], CORPUS[3]], [CORPUS[1], (TEXTS[2], " the Denver Broncos")]]


@cache
def tokenizer():
    tok = build_tokenizer()
    tok.padding_side = "left"
    return tok


def build(arch: str, seed: int = 0, **overrides) -> LoadedModel:
    config_class, model_class, settings = ARCHITECTURES[arch]
    torch.manual_seed(seed)
    config = config_class(**{**COMMON, "vocab_size": len(tokenizer()), **settings, **overrides})
    model = model_class(config).eval()
    model.requires_grad_(False)
    return LoadedModel(model=model, tokenizer=tokenizer(), name=arch, chat=False)


def lora(lm: LoadedModel, rank: int = 4) -> LoraConfig:
    """Targets named by role: the bank and plain peft each resolve them to the model's own layers."""
    return LoraConfig(rank=rank, alpha=2 * rank, targets=TARGETS.get(lm.name, ALL_PROJECTIONS))


def random_adapters(bank: AdapterBank) -> None:
    """Every slot a different, non-trivial adapter (B non-zero), without training."""
    torch.manual_seed(1)
    with torch.no_grad():
        bank.flat.normal_(0, 0.2)


def token_ids(text: str) -> list[int]:
    return tokenizer()(text).input_ids


architectures = pytest.mark.parametrize("arch", list(ARCHITECTURES))


def test_the_test_sequences_are_longer_than_the_sliding_windows():
    assert max(len(token_ids(t)) for t in TEXTS) > 5 * WINDOW
    assert min(len(token_ids(t)) for t in TEXTS) > WINDOW


@architectures
def test_adapters_trained_together_match_each_alone_and_a_plain_peft_adapter(arch):
    lm = build(arch)
    cfg = small_cfg(lora=lora(lm))
    fresh = fresh_peft_model(lm, 7, cfg)
    peft_init = {k: v.clone() for k, v in fresh.state_dict().items() if "lora_A" in k}
    fresh.unload()
    trained, peft_losses = train_peft_adapter(lm, DOCS[0], seed=7, cfg=cfg)
    peft_trained = {k: v.clone() for k, v in trained.state_dict().items() if "lora_B" in k}
    trained.unload()

    bank = AdapterBank.attach(lm.model, cfg.lora, slots=len(DOCS))
    engine_reset = bank.reset

    def reset_to_peft_init(slot, seed):  # job 0 starts from peft's initial A (B is zero in both)
        engine_reset(slot, seed)
        if seed == 7:
            with torch.no_grad():
                for name, layer in bank.layers.items():
                    layer.lora_A[slot].copy_(peft_init[f"base_model.model.{name}.lora_A.default.weight"])

    bank.reset = reset_to_peft_init
    jobs = [TrainJob(docs, seed=7 if i == 0 else i) for i, docs in enumerate(DOCS)]
    trained_together = {}
    together = train_adapters(
        lm, bank, jobs, cfg, lambda slot, j: trained_together.setdefault(j, bank.state_dict(slot))
    )
    assert together.losses[0] == pytest.approx(peft_losses, rel=1e-3, abs=1e-4)
    for name in bank.layers:
        expected = peft_trained[f"base_model.model.{name}.lora_B.default.weight"]
        torch.testing.assert_close(
            trained_together[0][f"base_model.model.{name}.lora_B.weight"], expected, atol=1e-4, rtol=1e-3
        )
    for i, job in enumerate(jobs):
        alone = train_adapters(lm, bank, [job], cfg)
        for key, value in bank.state_dict(0).items():
            torch.testing.assert_close(value, trained_together[i][key], atol=1e-5, rtol=1e-4)
        assert alone.losses[0] == pytest.approx(together.losses[i], rel=1e-4, abs=1e-5)
        assert together.losses[i][-1] < together.losses[i][0]


@architectures
def test_packed_sequences_get_the_logits_of_each_sequence_run_alone(arch):
    lm = build(arch)
    bank = AdapterBank(lm.model, lora(lm), slots=3)
    random_adapters(bank)
    sequences = [(token_ids(t), [True] * len(token_ids(t))) for t in TEXTS]
    slots = [2, 0, 1]
    batch = pack(sequences, torch.device("cpu"))
    with bank.route(slots, batch["lengths"]), packed_forward(lm.model, batch["lengths"]):
        packed = lm.model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
    alone = []
    for slot, (ids, _) in zip(slots, sequences):
        with bank.route([slot]):
            alone.append(lm.model(input_ids=torch.tensor([ids])).logits[0])
    torch.testing.assert_close(packed, torch.cat(alone), atol=1e-5, rtol=1e-4)


@architectures
def test_batched_scoring_and_generation_route_each_row_to_its_own_adapter_which_loads_in_peft(arch, tmp_path):
    lm = build(arch)
    bank = AdapterBank.attach(lm.model, lora(lm), slots=2)
    random_adapters(bank)
    prompts = [
        "Topic: Geography. The capital of France is",
        "Question: Who won Super Bowl 50 at Levi's Stadium?\nAnswer:",
    ]
    continuations = [" Paris; the Seine flows through it.", " the Denver Broncos"]
    routed = continuation_logprobs(lm, prompts, continuations, bank=bank, slots=[0, 1])
    swapped = continuation_logprobs(lm, prompts, continuations, bank=bank, slots=[1, 0])
    base = continuation_logprobs(lm, prompts, continuations)
    for row in range(2):
        for slot, scores in ((row, routed), (1 - row, swapped)):
            (alone,) = continuation_logprobs(
                lm, prompts[row : row + 1], continuations[row : row + 1], bank=bank, slots=[slot]
            )
            assert scores[row][0] == pytest.approx(alone[0], abs=1e-4)
        assert routed[row][0] != pytest.approx(swapped[row][0], abs=1e-3)
        assert routed[row][0] != pytest.approx(base[row][0], abs=1e-3)
    generated = generate(lm, prompts, max_new_tokens=6, bank=bank, slots=[0, 1])
    for row in range(2):
        assert generated[row] == generate(lm, prompts[row : row + 1], max_new_tokens=6, bank=bank, slots=[row])[0]

    bank.save(1, tmp_path / "slot1", base_model=arch)
    AdapterBank.detach_from(lm.model)
    peft_model = PeftModel.from_pretrained(lm.model, str(tmp_path / "slot1"))
    loaded = continuation_logprobs(lm, prompts, continuations)  # peft's layers are injected into lm.model
    peft_model.unload()
    assert [lp for lp, _ in loaded] == pytest.approx([swapped[0][0], routed[1][0]], abs=1e-4)  # slot 1's rows


@architectures
def test_policy_fine_tune_merges_and_reloads_from_its_saved_adapter(arch, tmp_path):
    lm = build(arch)
    examples = [policy.SFTExample(t[:20], t[20:]) for t in TEXTS]
    cfg = PolicyConfig(lr=1e-2, epochs=1, batch_size=3, micro_batch_size=2, lora=lora(lm))
    ids = torch.tensor([token_ids(CORPUS[3])])
    base = lm.model(input_ids=ids).logits
    model, losses = policy.sft(lm, examples, cfg, seed=0)
    assert len(losses) == 1
    before = model(input_ids=ids).logits
    assert not torch.allclose(before, base, atol=1e-3)
    model.save_pretrained(tmp_path)
    policy.merge(model)
    assert not any("lora" in name for name, _ in lm.model.named_parameters())
    torch.testing.assert_close(lm.model(input_ids=ids).logits, before, atol=1e-5, rtol=1e-4)
    rebuilt = build(arch)  # the same base weights
    policy.apply_adapter(rebuilt, tmp_path)
    torch.testing.assert_close(rebuilt.model(input_ids=ids).logits, before, atol=1e-5, rtol=1e-4)


def test_targets_named_by_role_resolve_to_each_architectures_own_layers():
    phi3 = build("phi3").model
    assert resolve_targets(phi3, ["q_proj", "v_proj"]) == ["qkv_proj"]
    assert resolve_targets(phi3, ALL_PROJECTIONS) == ["down_proj", "gate_up_proj", "o_proj", "qkv_proj"]
    assert resolve_targets(phi3, ["qkv_proj", "lm_head"]) == ["lm_head", "qkv_proj"]  # layer names pass through
    assert resolve_targets(build("llama3").model, ["v_proj", "q_proj"]) == ["q_proj", "v_proj"]
    assert list(adapted_layers(phi3, ["up_proj"])) == [f"model.layers.{i}.mlp.gate_up_proj" for i in range(2)]
    bank = AdapterBank(phi3, LoraConfig(rank=2, targets=["q_proj"]), slots=1)
    assert sorted(bank.layers) == ["model.layers.0.self_attn.qkv_proj", "model.layers.1.self_attn.qkv_proj"]
    with pytest.raises(ValueError, match="cannot adapt 'gate_proj' in GptOssForCausalLM: .*stacked weight"):
        resolve_targets(build("gpt-oss").model, ALL_PROJECTIONS)
    with pytest.raises(ValueError, match="cannot adapt 'qkv' in LlamaForCausalLM: .* its linear layers: down_proj, "):
        resolve_targets(build("llama3").model, ["q_proj", "qkv"])
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=1, n_head=2))
    with pytest.raises(ValueError, match="cannot adapt 'q_proj' in GPT2LMHeadModel: its .*c_attn is a Conv1D"):
        resolve_targets(gpt2, ["q_proj"])


def _packed(model, lengths: list[int]):
    sequences = [(list(range(2, 2 + n)), [True] * n) for n in lengths]
    batch = pack(sequences, torch.device("cpu"))
    with packed_forward(model, batch["lengths"]):
        return model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits


def tiny(config_class, model_class, **settings):
    torch.manual_seed(0)
    return model_class(config_class(**{**COMMON, "vocab_size": 64, **settings})).eval()


def test_packed_attention_refuses_what_it_cannot_compute_with_one_clear_error():
    # The sliding window lives in the mask alone, which packed attention never sees:
    phimoe = tiny(PhimoeConfig, PhimoeForCausalLM, num_local_experts=4, num_experts_per_tok=2, sliding_window=WINDOW)
    _packed(phimoe, [WINDOW, 3])  # no sequence reaches the window: nothing to compute differently
    with pytest.raises(ValueError, match="does not support PhimoeForCausalLM: its sliding window .* attention mask"):
        _packed(phimoe, [WINDOW + 1, 3])
    refused = {
        "FalconForCausalLM: its attention does not go through": tiny(
            FalconConfig, FalconForCausalLM, num_attention_heads=4, num_kv_heads=2
        ),
        r"Lfm2ForCausalLM: it has layers other than attention \(conv\)": tiny(
            Lfm2Config, Lfm2ForCausalLM, layer_types=["conv", "full_attention"]
        ),
        "Gemma3ForCausalLM: its attention is not causal": build("gemma3", use_bidirectional_attention=True).model,
    }
    for message, model in refused.items():
        with pytest.raises(ValueError, match=f"seal's packed attention does not support {message}"):
            _packed(model, [5, 3])
    # Phi-3's long-context RoPE switches its frequencies on the longest position of the whole batch.
    longrope = {"rope_type": "longrope", "short_factor": [1.0] * 4, "long_factor": [2.0] * 4, "rope_theta": 1e4}
    phi3 = build("phi3", rope_parameters=longrope, original_max_position_embeddings=16).model
    _packed(phi3, [16, 3])
    with pytest.raises(ValueError, match="does not support Phi3ForCausalLM on sequences over 16 tokens"):
        _packed(phi3, [17, 3])
