"""`--model PATH.gguf`: any GGUF file converted once (cached by its content's hash), the same model as the
packaged one built from the same file; a GGUF transformers cannot read is one clear error."""

import shutil

import gguf
import pytest
import torch

from seal import models
from seal.models import EMBEDDED, PACKAGED, ModelLoadError, load_model, packaged_gguf_path

pytestmark = pytest.mark.slow


def test_a_gguf_file_converts_once_into_the_same_model_as_the_packaged_one(tmp_path, monkeypatch):
    monkeypatch.setenv("SEAL_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "mine.gguf"
    shutil.copyfile(packaged_gguf_path(PACKAGED[EMBEDDED]), path)
    mine = load_model(str(path), dtype="float32")
    monkeypatch.delenv("SEAL_CACHE")
    packaged = load_model(EMBEDDED, dtype="float32")
    ids = packaged.tokenizer("The capital of France is", return_tensors="pt").input_ids
    assert mine.tokenizer("The capital of France is", return_tensors="pt").input_ids.equal(ids)
    with torch.no_grad():
        torch.testing.assert_close(mine.model(ids).logits, packaged.model(ids).logits)
    assert mine.chat  # its tokenizer has a chat template
    (entry,) = (tmp_path / "cache").iterdir()
    assert entry.name.startswith("gguf-mine-")

    def no_second_conversion(*args):
        raise AssertionError("converted again")

    monkeypatch.setenv("SEAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(models, "_convert_gguf", no_second_conversion)
    load_model(str(path), dtype="float32")  # read from the cache
    with path.open("ab") as f:  # a changed file is a new cache entry
        f.write(b"\0")
    with pytest.raises(AssertionError, match="converted again"):
        load_model(str(path), dtype="float32")


def test_a_gguf_of_an_architecture_transformers_cannot_read_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SEAL_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "odd.gguf"
    writer = gguf.GGUFWriter(str(path), "made-up-arch")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", torch.zeros(8, 4).numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ModelLoadError, match=r"odd\.gguf: transformers cannot dequantise this GGUF file \(.+\)"):
        load_model(str(path))
    assert not any((tmp_path / "cache").glob("gguf-odd-*/config.json"))  # nothing half-converted left as done


def test_a_missing_gguf_file_is_one_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="GGUF file .*nothere.gguf does not exist"):
        load_model(str(tmp_path / "nothere.gguf"))
