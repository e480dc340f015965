"""ReST-EM: selection, the policy fine-tuning step, rebuilding a policy from its adapters, and whole runs."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import build_tiny_model
from seal import policy
from seal.cli import app
from seal.config import PolicyConfig
from seal.engine.sampling import continuation_logprobs
from seal.models import LoadedModel
from seal.policy import select

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_best_of_k_prefers_any_gain_over_none_and_keeps_the_best_even_without_gain():
    assert select({0: 0.0, 1: 0.25, 2: 0.1}, "best") == [1]
    assert select({0: -0.3, 1: -0.1}, "best") == [1]  # the paper keeps the best even when nothing gains
    assert select({0: 0.2, 1: 0.2}, "best") == [0]  # ties: the first
    assert select({0: None, 1: 0.0}, "best") == [1]  # a self-edit that gave no plan is never kept
    assert select({0: None, 1: None}, "best") == []
    assert select({0: 0.0, 1: 0.3, 2: -0.1, 3: 0.05}, "positive") == [1, 3]
    with pytest.raises(ValueError, match="unknown selection"):
        select({0: 1.0}, "all")


def _examples(lm):
    return [
        policy.SFTExample(
            lm.format_prompt("Implications of the passage about Paris:\n"), "1. Paris is the capital of France."
        ),
        policy.SFTExample(
            lm.format_prompt("Implications of the passage about Denver:\n"), "1. The Broncos won the game."
        ),
    ]


def _loglik(lm, examples):
    return sum(
        lp for lp, _ in continuation_logprobs(lm, [e.prompt for e in examples], [e.completion for e in examples])
    )


def test_sft_on_kept_self_edits_raises_their_likelihood_and_only_touches_the_merged_weights(tiny_lm):
    examples = _examples(tiny_lm)
    before = _loglik(tiny_lm, examples)
    embeddings = tiny_lm.model.get_input_embeddings().weight.clone()
    cfg = PolicyConfig(lr=1e-2, epochs=1, batch_size=2, micro_batch_size=1)
    cfg.lora.rank = 4
    model, losses = policy.sft(tiny_lm, examples, cfg, seed=0)
    assert len(losses) == 1  # one optimiser step: 2 examples, batch 2, in 2 micro-batches
    policy.merge(model)
    after = _loglik(tiny_lm, examples)
    assert after > before + 0.5
    assert torch.equal(tiny_lm.model.get_input_embeddings().weight, embeddings)  # LoRA targets only
    assert not any("lora" in name for name, _ in tiny_lm.model.named_parameters())  # merged, unwrapped


def test_micro_batching_and_checkpointing_do_not_change_the_optimiser_step(tiny_lm):
    weights = []
    for micro, checkpointing in ((1, False), (2, False), (2, True)):
        lm = LoadedModel(build_tiny_model(len(tiny_lm.tokenizer)), tiny_lm.tokenizer, "tiny", False)
        cfg = PolicyConfig(
            lr=1e-2, epochs=1, batch_size=2, micro_batch_size=micro, activation_checkpointing=checkpointing
        )
        cfg.lora.rank = 4
        model, _ = policy.sft(lm, _examples(lm), cfg, seed=0)
        # off again after: the inner loop's packed batches cannot be recomputed outside their forward pass
        assert not lm.model.is_activation_checkpointing
        policy.merge(model)
        weights.append(lm.model.model.layers[0].self_attn.q_proj.weight.clone())
    for other in weights[1:]:
        torch.testing.assert_close(weights[0], other, atol=1e-5, rtol=1e-4)


def test_a_round_adapters_files_rebuild_the_policy_the_in_process_merge_gives(tiny_lm, tmp_path):
    cfg = PolicyConfig(lr=1e-2, epochs=2, batch_size=1)
    cfg.lora.rank = 4
    pairs = [(e.prompt, e.completion) for e in _examples(tiny_lm)]
    before = {k: v.clone() for k, v in tiny_lm.model.state_dict().items()}
    files, losses = policy.sft_adapter_files(tiny_lm, pairs, cfg, seed=3)
    assert len(losses) == 4 and "adapter_model.safetensors" in files
    for k, v in tiny_lm.model.state_dict().items():
        torch.testing.assert_close(v, before[k], atol=0, rtol=0)  # the LoRA was unloaded, not merged
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    policy.apply_adapter(tiny_lm, tmp_path)
    in_process = LoadedModel(build_tiny_model(len(tiny_lm.tokenizer)), tiny_lm.tokenizer, "tiny", False)
    model, _ = policy.sft(in_process, [policy.SFTExample(p, c) for p, c in pairs], cfg, seed=3)
    policy.merge(model)
    for (name, a), (_, b) in zip(tiny_lm.model.state_dict().items(), in_process.model.state_dict().items()):
        torch.testing.assert_close(a, b, atol=0, rtol=0, msg=name)


# --- whole runs -----------------------------------------------------------------------------------------


@pytest.fixture
def train_and_eval_files(tmp_path):
    def passage(title, fact, question, answer):
        return {"title": title, "context": fact, "questions": [{"question": question, "answer": answer}]}

    train = [
        passage("Paris", "The capital of France is Paris.", "What is the capital of France?", "Paris"),
        passage("Broncos", "The Denver Broncos won Super Bowl 50.", "Who won Super Bowl 50?", "Denver Broncos"),
        passage("Seine", "The Seine flows through Paris.", "Which river flows through Paris?", "the Seine"),
    ]
    held_out = [
        passage(
            "Levi's Stadium",
            "Super Bowl 50 was played at Levi's Stadium.",
            "Where was Super Bowl 50?",
            "Levi's Stadium",
        ),
        passage(
            "Santa Clara", "Levi's Stadium is in Santa Clara, California.", "Where is Levi's Stadium?", "Santa Clara"
        ),
    ]
    paths = tmp_path / "train.json", tmp_path / "eval.json"
    for path, data in zip(paths, (train, held_out)):
        path.write_text(json.dumps(data))
    return paths


def train_args(tiny_dir, files, out, *extra):
    return [
        "knowledge", "train", "--model", str(tiny_dir), "--train-data", str(files[0]), "--eval-data", str(files[1]),
        "--train-passages", "3", "--eval-passages", "2", "--rounds", "2", "--k", "2", "--out", str(out),
        "--set", "adapt.epochs=2", "--set", "adapt.lora.rank=4", "--set", "policy.lora.rank=4",
        "--set", "sampling.max_new_tokens=16", "--set", "answer.max_new_tokens=6", "--set", "model.dtype=float32",
        "--set", "reward=loglik", "--set", "policy.lr=1e-2", "--set", "policy.batch_size=1",
        *extra,
    ]  # fmt: skip


def test_train_runs_two_rounds_reports_and_resumes_without_work(tiny_dir, train_and_eval_files, tmp_path, monkeypatch):
    out = tmp_path / "run"
    first = runner.invoke(app, train_args(tiny_dir, train_and_eval_files, out))
    assert first.exit_code == 0, first.output
    results = json.loads((out / "results.json").read_text())
    assert results["schema"] == "seal.knowledge.train/1" and [r["round"] for r in results["rounds"]] == [0, 1, 2]
    for r in results["rounds"][1:]:
        assert len(r["train"]["rewards"]) == 6 and r["train"]["kept"] == 3 and r["train"]["sft_examples"] == 3
    assert set(results["rounds"][0]["eval"]) == {"base", "implications", "in-context", "passage"}
    assert set(results["rounds"][2]["eval"]) == {"base", "implications", "in-context"}  # drift: does it still read?
    assert sorted(p.name for p in (out / "policy").iterdir()) == ["round-1", "round-2"]
    report = runner.invoke(app, ["report", str(out)])
    assert report.exit_code == 0, report.output
    assert (out / "report" / "eval_by_round.png").stat().st_size > 1000
    assert "| 2 |" in (out / "report" / "report.md").read_text()

    def no_more_work(*args, **kwargs):
        raise AssertionError("a finished run must not redo work")

    for target in ("experiments.knowledge_steps.adapt_batch", "experiments.steps.generate", "policy.sft"):
        monkeypatch.setattr(f"seal.{target}", no_more_work)
    again = runner.invoke(app, train_args(tiny_dir, train_and_eval_files, out))
    assert again.exit_code == 0, again.output
    assert json.loads((out / "results.json").read_text())["rounds"][2]["eval"] == results["rounds"][2]["eval"]


def test_each_rounds_policy_raises_the_likelihood_of_its_kept_self_edits(tiny_dir, train_and_eval_files, tmp_path):
    from seal.models import load_model

    out = tmp_path / "run"
    assert runner.invoke(app, train_args(tiny_dir, train_and_eval_files, out, "--rounds", "1")).exit_code == 0
    db = sqlite3.connect(out / "store.sqlite")
    records = {(k, key): json.loads(v) for k, key, v in db.execute("SELECT kind, key, value FROM records")}
    kept = [
        records[("self_edits", f"r1/train/implications/{key.split('/')[1]}/{i}")]
        for (kind, key), value in records.items()
        if kind == "selections"
        for i in value["kept"]
    ]
    assert len(kept) == 3
    lm = load_model(str(tiny_dir), dtype="float32")
    examples = [policy.SFTExample(lm.format_prompt(e["prompt"]), e["text"]) for e in kept]
    before = _loglik(lm, examples)
    policy.apply_adapter(lm, out / "policy" / "round-1")
    assert _loglik(lm, examples) > before


def test_train_refuses_overlapping_training_and_held_out_passages(tiny_dir, train_and_eval_files, tmp_path):
    args = train_args(tiny_dir, (train_and_eval_files[0], train_and_eval_files[0]), tmp_path / "run")
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "both training and held-out" in result.output


# --- SIGKILL and resume ------------------------------------------------------------------------------------


def _without_times(value):
    if isinstance(value, dict):
        return {k: _without_times(v) for k, v in value.items() if "seconds" not in k}
    if isinstance(value, list):
        return [_without_times(v) for v in value]
    return value


def _records(out: Path) -> dict:
    """Everything a run recorded except how it ran: wall times, and the training progress `seal status` reads
    (a resumed run trains fewer tokens in its last session)."""
    db = sqlite3.connect(out / "store.sqlite")
    rows = {
        (kind, key): _without_times(json.loads(value))
        for kind, key, value in db.execute(
            "SELECT kind, key, value FROM records WHERE kind NOT IN ('timing', 'training')"
        )
    }
    db.close()
    return rows


def _recorded(out: Path, kind: str, like: str) -> int:
    try:
        db = sqlite3.connect(out / "store.sqlite", timeout=0.1)
        (n,) = db.execute("SELECT count(*) FROM records WHERE kind = ? AND key LIKE ?", (kind, like)).fetchone()
        db.close()
        return n
    except sqlite3.Error:
        return 0


def _run_and_kill(args: list[str], when, timeout: float = 120.0) -> None:
    """Start the command, SIGKILL it as soon as `when()` holds (it must hold before the command ends)."""
    proc = subprocess.Popen([sys.executable, "-m", "seal", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=os.environ | {"HF_HUB_OFFLINE": "1"})  # fmt: skip
    deadline = time.monotonic() + timeout
    while not when():
        assert proc.poll() is None, f"the run ended before the kill point: {proc.stderr.read().decode()[-2000:]}"
        assert time.monotonic() < deadline, "kill point never reached"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _finish(args: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "seal", *args], cwd=ROOT, capture_output=True,
                          env=os.environ | {"HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()[-3000:]


@pytest.mark.parametrize("phase", ["adapt-and-score", "policy-sft"])
def test_a_run_killed_with_sigkill_resumes_to_the_same_records(tiny_dir, train_and_eval_files, tmp_path, phase):
    # Slow enough that the kill lands inside the phase: one adapter per batch, many SFT steps.
    slow = ["--set", "adapt.slots=1", "--set", "adapt.epochs=20", "--set", "policy.epochs=150", "--rounds", "1"]
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    _finish(train_args(tiny_dir, train_and_eval_files, reference, *slow))
    args = train_args(tiny_dir, train_and_eval_files, killed, *slow)
    if phase == "adapt-and-score":
        # Killed after the first of six training adaptations was recorded, before the last.
        _run_and_kill(args, lambda: _recorded(killed, "answers", "r1/train/implications/%") >= 1)
        assert _recorded(killed, "answers", "r1/train/implications/%") < 6
    else:
        # Killed once the selections are recorded (the fine-tuning starts right after), before its policy is.
        _run_and_kill(args, lambda: _recorded(killed, "selections", "r1/%") > 0)
        assert _recorded(killed, "policy", "r1") == 0
    _finish(args)
    assert _records(killed) == _records(reference)
    results = [_without_times(json.loads((d / "results.json").read_text())) for d in (reference, killed)]
    assert results[0] == results[1]
    assert [p.name for p in (killed / "policy").iterdir()] == ["round-1"]  # no half-written checkpoint left


def test_reward_diagnostics_read_the_first_two_runs_of_the_usable_self_edits():
    """Context 1: self-edits with runs [0, 1] and [2, 3] and one without a plan; context 2: [1, 1] and [0, 2].
    First runs 0 2 | 1 0, second runs 1 3 | 1 2: the best is index 1 then index 0 in the first run, index 1 in
    both contexts in the second (same best in 1 of 2); within spread of single runs: variances 0.5 0.5 0 2."""
    from seal.experiments.rest_em import reward_diagnostics

    out = reward_diagnostics([[[0.0, 1.0], None, [2.0, 3.0]], [[1.0, 1.0], [0.0, 2.0]]])
    assert out["reliability"]["n_self_edits"] == 4 and out["reliability"]["same_best"] == 0.5
    assert out["signal_to_noise"]["within_sd"] == pytest.approx((3 / 4) ** 0.5)
    assert reward_diagnostics([[[0.5], [1.0]], [None]]) == {}  # one run each: nothing to compare


def test_a_round_with_two_runs_per_self_edit_reports_whether_its_reward_is_signal(
    tiny_dir, train_and_eval_files, tmp_path
):
    out = tmp_path / "run"
    args = train_args(tiny_dir, train_and_eval_files, out, "--set", "repeats=2", "--rounds", "1")
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    train = json.loads((out / "results.json").read_text())["rounds"][1]["train"]
    reliability, snr = train["reliability"], train["signal_to_noise"]
    assert reliability["n_self_edits"] == 6 and -1 <= reliability["correlation"] <= 1
    assert snr["within_sd"] > 0  # two seeds of one self-edit train two different adapters
    assert 0 <= train["answers_restated"] <= 1 and train["self_edit_lines"] >= 0
    assert runner.invoke(app, ["report", str(out)]).exit_code == 0
    assert "same best self-edit" in (out / "report" / "report.md").read_text()
