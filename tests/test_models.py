import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

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


class Hub(BaseHTTPRequestHandler):
    """A loopback hub: knows no model, and is down (503) for the ids under `down/`."""

    def do_GET(self):
        down = self.path.startswith("/api/models/down/")
        self.send_response(503 if down else 404)
        if not down:
            self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


def test_an_unknown_or_unreachable_hub_id_fails_at_once_in_one_line(tmp_path):
    server = HTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    script = (
        "import time\nfrom seal.models import ModelLoadError, load_model\n"
        "for name in ('foo/bar', 'down/model'):\n"
        "    start = time.perf_counter()\n"
        "    try:\n        load_model(name)\n"
        "    except ModelLoadError as err:\n        print(f'{time.perf_counter() - start:.2f}', err)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env |= {"HF_ENDPOINT": f"http://127.0.0.1:{server.server_port}", "HF_HOME": str(tmp_path)}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    server.shutdown()
    unknown, down = done.stdout.strip().splitlines()
    assert "'foo/bar': the Hugging Face hub has no such model" in unknown
    assert "'down/model': the Hugging Face hub is unreachable" in down and "not in the local cache" in down
    assert all(float(line.split()[0]) < 5 for line in (unknown, down))  # transformers' retries alone take 23 s
    assert "Retrying" not in done.stderr and "Retry" not in done.stdout
