import pytest
import torch

from seal.models import ModelLoadError, load_model


def test_local_directory_loads_the_same_model(tiny_lm, tmp_path):
    tiny_lm.model.save_pretrained(tmp_path)
    tiny_lm.tokenizer.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path), dtype="float32", device="cpu")
    ids = torch.tensor([[5, 6, 7, 8]])
    torch.testing.assert_close(loaded.model(ids).logits, tiny_lm.model(ids).logits)
    assert loaded.chat is False and loaded.tokenizer.padding_side == "left"
    assert not any(p.requires_grad for p in loaded.model.parameters())


def test_missing_directory_is_one_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "nope"))


def test_directory_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(str(tmp_path))


def test_unknown_hub_id_is_one_clear_error():
    with pytest.raises(ModelLoadError, match="cannot load model 'no-such-org/no-such-model'") as err:
        load_model("no-such-org/no-such-model")
    assert "\n" not in str(err.value)


def test_chat_template_required_when_asked(tiny_lm, tmp_path):
    tiny_lm.model.save_pretrained(tmp_path)
    tiny_lm.tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="no chat template"):
        load_model(str(tmp_path), chat_template=True)


def test_output_layer_gets_a_contiguous_input(tiny_dir):
    """generate() keeps only the last position's logits by slicing the hidden states; a sliced
    view costs torch's CPU linear a copy of the head weight per row, so the loaded model's
    head makes its input contiguous first."""
    lm = load_model(str(tiny_dir), dtype="float32", device="cpu")
    seen = []
    lm.model.get_output_embeddings().register_forward_pre_hook(
        lambda module, args: seen.append(args[0].is_contiguous())
    )
    batch = lm.tokenizer(["The capital of France", "Paris"], return_tensors="pt", padding=True)
    lm.model.generate(**batch, max_new_tokens=2, do_sample=False, pad_token_id=lm.tokenizer.pad_token_id)
    assert seen and all(seen)
