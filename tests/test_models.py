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
