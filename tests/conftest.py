"""Shared fixtures: a tiny randomly initialised Llama with a real (small) BPE tokenizer, built in the test."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

# The hub is unreachable here: fail fast instead of retrying (read when huggingface_hub is imported).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from seal.models import LoadedModel

SHARED_DATA = Path(os.environ.get("SEAL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))

CORPUS = [
    "The Denver Broncos won Super Bowl 50 at Levi's Stadium in Santa Clara, California.",
    "Question: Who won the game?\nAnswer: the Denver Broncos",
    "Topic: Geography. The capital of France is Paris; the Seine flows through it.",
    "Implications:\n1. A list of facts follows.\n- Another line.",
    "0123456789 [] {} , . : ; ' \" ! ? ( )",
]


def build_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<pad>", "<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS * 5, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


def build_tiny_model(vocab: int, seed: int = 0, tied: bool = True) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=tied,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
    )
    model = LlamaForCausalLM(config).eval()
    model.requires_grad_(False)
    return model


@pytest.fixture
def tiny_lm() -> LoadedModel:
    tok = build_tokenizer()
    tok.padding_side = "left"
    return LoadedModel(model=build_tiny_model(len(tok)), tokenizer=tok, name="tiny", chat=False)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.fail(f"shared data not found at {SHARED_DATA}; set SEAL_SHARED_DATA")
    return SHARED_DATA


@pytest.fixture(scope="session", autouse=True)
def seal_data(tmp_path_factory) -> Iterator[Path]:
    """The data directory of every test (and of the commands they start): the data sets fetched from the
    shared mirror, by `seal data fetch NAME --from MIRROR` as a user without internet would."""
    from seal.datasets import DATA_ENV, DATASETS, fetch

    directory = tmp_path_factory.mktemp("seal-data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(DATA_ENV, str(directory))
        if SHARED_DATA.exists():
            for name in DATASETS:
                fetch(name, mirror=SHARED_DATA)
        yield directory


@pytest.fixture
def tiny_dir(tiny_lm, tmp_path) -> Path:
    """The tiny model saved as a local model directory, as a user's own model would be."""
    path = tmp_path / "tiny-model"
    tiny_lm.model.save_pretrained(path)
    tiny_lm.tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def passages3(tmp_path) -> Path:
    facts = [
        (
            "Paris",
            "The capital of France is Paris. The Seine flows through it.",
            "What is the capital of France?",
            "Paris",
        ),
        ("Broncos", "The Denver Broncos won Super Bowl 50.", "Who won Super Bowl 50?", "Denver Broncos"),
        ("Santa Clara", "Levi's Stadium is in Santa Clara, California.", "Where is Levi's Stadium?", "Santa Clara"),
    ]
    data = [{"title": t, "context": c, "questions": [{"question": q, "answer": a}]} for t, c, q, a in facts]
    path = tmp_path / "passages3.json"
    path.write_text(json.dumps(data))
    return path


class FakeJudge(BaseHTTPRequestHandler):
    """A loopback OpenAI-compatible endpoint: fails once with 503, then answers by substring."""

    calls: list[dict] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeJudge.calls.append({"auth": self.headers["Authorization"], "body": body})
        if len(FakeJudge.calls) == 1:
            self.send_response(503)
            self.end_headers()
            return
        user = body["messages"][-1]["content"]
        gold = user.split("Reference answer: ")[1].split("\n")[0]
        student = user.split("Student answer: ")[1]
        reply = "Yes" if gold.lower() in student.lower() else "No"
        payload = json.dumps({"choices": [{"message": {"content": reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def judge_server():
    FakeJudge.calls = []
    server = HTTPServer(("127.0.0.1", 0), FakeJudge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()
