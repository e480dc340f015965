"""Watching a run while it runs: the store numbers and times its writes and tells its observers, a Tracker
turns them into events for TensorBoard, W&B (offline) and MLflow (local), each read back here with the tool's
own reader; a killed and resumed run logs each step once; `seal status` reads a run another process writes."""

import dataclasses
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import test_cli
import test_rest_em
from seal.cli import app
from seal.config import KnowledgeEvalConfig
from seal.status import read_status
from seal.store import CONFIG_FILE, STORE_FILE, RunStore
from seal.tracking import STATE_FILE, TRACKING_DIR, Tracker
from test_cli import SMALL, tiny_eval_args
from test_rest_em import ROOT, _recorded, _run_and_kill, train_args

passages_file, train_and_eval_files = test_cli.passages_file, test_rest_em.train_and_eval_files  # their fixtures

runner = CliRunner()
LIVE_ONLY = ("throughput/", "system/")  # measured as the run goes (a phase's clock restarts on a resume)


@pytest.fixture(autouse=True)
def offline_wandb(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


# --- reading each tool's files back -------------------------------------------------------------------------


def tensorboard(directory: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(directory), size_guidance={"scalars": 0, "histograms": 0})
    accumulator.Reload()
    return accumulator


def scalars(accumulator) -> dict[str, list[tuple[int, float]]]:
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def wandb_rows(run: Path) -> list[dict]:
    """The rows W&B logged, read from its offline run files (a log of protobuf records in 32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2

    rows = []
    for path in sorted((run / TRACKING_DIR / "wandb").glob("offline-run-*/run-*.wandb")):
        for data in _log_records(path.read_bytes()):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(data)
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})  # fmt: skip
    return rows


def _log_records(data: bytes):
    """The records of a W&B transaction log: a 7-byte header, then blocks of records, each with a 7-byte
    header (checksum, length, type: 1 whole, 2 first part, 3 middle, 4 last), a block's tail padded."""
    block, pos, parts = 32768, 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 2):
            parts = chunk
        elif kind in (3, 4):
            parts += chunk
        if kind in (1, 4):
            yield parts


def mlflow_history(run: Path, name: str) -> list[tuple[int, float]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{run / TRACKING_DIR / 'mlflow.db'}")
    run_id = json.loads((run / TRACKING_DIR / STATE_FILE).read_text())["mlflow"]["run_id"]
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, name))


def expected_steps(run: Path) -> dict[str, list[int]]:
    """Per tag, the steps its events belong at, replayed from the run's store (the source of truth)."""
    out: dict[str, list[int]] = {}
    with RunStore(run, None, read_only=True) as store:
        tracker = Tracker(store, [], {})
        for step, kind, items in store.writes_after(0):
            events = tracker.events(kind, items, step)
            for tag in [*events.scalars, *events.histograms]:
                out.setdefault(tag, []).append(step)
    return {tag: sorted(set(steps)) for tag, steps in out.items()}


# --- the store -----------------------------------------------------------------------------------------------


class Seen:
    def __init__(self):
        self.writes, self.closed_times = [], 0

    def written(self, store, kind, items, step):
        self.writes.append((kind, [k for k, _ in items], step))

    def closed(self, store):
        self.closed_times += 1


def test_the_store_numbers_and_times_each_write_tells_its_observers_and_a_reopened_store_goes_on_counting(tmp_path):
    config = KnowledgeEvalConfig()
    seen = Seen()
    began = time.time()
    with RunStore(tmp_path, config) as store:
        store.observe(seen)
        store.put_many("answers", [("a/1", [1]), ("a/2", [2])])
        store.put("adapt", "a/1", {"loss_first": 2.0})
    assert seen.writes == [("answers", ["a/1", "a/2"], 1), ("adapt", ["a/1"], 2)] and seen.closed_times == 1
    with RunStore(tmp_path, config) as store:
        store.put("answers", "a/2", [3])  # written again: its time and step are the new write's
        assert store.step() == 3
        times = store.write_times("answers")
        assert times["a/1"][1] == 1 and times["a/2"][1] == 3 and began <= times["a/1"][0] <= time.time()
        assert [(step, kind, [k for k, _ in items]) for step, kind, items in store.writes_after(1)] == [
            (2, "adapt", ["a/1"]),
            (3, "answers", ["a/2"]),
        ]


def test_a_store_from_before_writes_were_timed_is_read_as_it_is_and_a_writer_adds_the_columns(tmp_path):
    config = KnowledgeEvalConfig()
    (tmp_path / CONFIG_FILE).write_text(yaml.safe_dump(config.model_dump(mode="json")))
    db = sqlite3.connect(tmp_path / STORE_FILE)
    db.execute("CREATE TABLE records (kind TEXT, key TEXT, value TEXT, PRIMARY KEY (kind, key))")
    db.execute("INSERT INTO records VALUES ('answers', 'base/p0/0', '[]')")
    db.commit()
    db.close()
    status = read_status(tmp_path)
    assert status.phase is None and status.holder is None and not status.finished
    result = runner.invoke(app, ["status", str(tmp_path)])
    assert result.exit_code == 0 and "phase: not recorded" in result.output
    with RunStore(tmp_path, config) as store:
        assert store.write_times("answers") == {} and store.step() == 0  # an old record has no time
        store.put("answers", "base/p1/0", [])
        assert store.get("answers", "base/p0/0") == [] and set(store.write_times("answers")) == {"base/p1/0"}


# --- a run with every sink --------------------------------------------------------------------------------------


def test_the_cpu_rest_em_recipe_logs_its_rounds_to_tensorboard_wandb_and_mlflow(tiny_dir, tmp_path, monkeypatch):
    """configs/cpu-train.yaml on the tiny model, with every sink; each tool's files read back by its own reader."""
    monkeypatch.chdir(ROOT)
    out = tmp_path / "run"
    args = ["knowledge", "train", "-c", "configs/cpu-train.yaml", "--model", str(tiny_dir), "--out", str(out),
            *SMALL["knowledge train"], "--set", "model.dtype=float32"]  # fmt: skip
    args += ["--tracking", "tensorboard,wandb,mlflow"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    trained = results["rounds"][1]["train"]
    kept_share = trained["kept"] / len(trained["rewards"])
    evaluated = [r["eval"]["implications"]["ci"]["loglik"]["mean"] for r in results["rounds"]]
    with RunStore(out, None, read_only=True) as store:
        policy_losses = store.get("policy", "r1")["losses"]
    expected = expected_steps(out)

    board = tensorboard(out / TRACKING_DIR / "tensorboard")
    logged = scalars(board)
    for tag in ("inner/loss_first", "inner/loss_last", "score/loglik", "self_edits/words", "round/kept_share",
                "sft/loss_last", "eval/base/loglik_lo", "eval/passage/loglik", "eval/implications/gain",
                "throughput/adapted_per_minute", "throughput/train_tokens_per_second",
                "throughput/sampled_per_minute", "system/peak_rss_gb"):  # fmt: skip
        assert tag in logged, tag
    assert {tag: [s for s, _ in events] for tag, events in logged.items() if not tag.startswith(LIVE_ONLY)} == {
        tag: steps for tag, steps in expected.items() if not tag.startswith(LIVE_ONLY)
    }  # every step the store holds, once
    assert {"inner/loss_last", "score/loglik", "self_edits/words"} <= set(board.Tags()["histograms"])
    assert [v for _, v in logged["round/kept_share"]] == pytest.approx([kept_share])
    assert [v for _, v in logged["eval/implications/loglik"]] == pytest.approx(evaluated, rel=1e-5)  # float32
    curve = scalars(tensorboard(out / TRACKING_DIR / "tensorboard" / "sft" / "round-1"))["loss"]
    assert [v for _, v in curve] == pytest.approx(policy_losses, rel=1e-5)
    assert [s for s, _ in curve] == list(range(1, len(policy_losses) + 1))

    rows = wandb_rows(out)
    assert {"inner/loss_last", "round/kept_share", "sft/loss_last", "eval/implications/loglik", "round"} <= {
        k for row in rows for k in row
    }
    evaluations = [row for row in rows if "eval/implications/loglik" in row]
    assert [row["eval/implications/loglik"] for row in evaluations] == pytest.approx(evaluated)
    assert [row["round"] for row in evaluations] == [0, 1]
    assert [row["_step"] for row in rows if "inner/loss_last" in row] == expected["inner/loss_last"]

    assert [v for _, v in mlflow_history(out, "round/kept_share")] == pytest.approx([kept_share])
    assert [v for _, v in mlflow_history(out, "eval/implications/loglik")] == pytest.approx(evaluated)
    assert [v for _, v in mlflow_history(out, "sft/round-1/loss")] == pytest.approx(policy_losses)
    assert [s for s, _ in mlflow_history(out, "inner/loss_last")] == expected["inner/loss_last"]

    status = runner.invoke(app, ["status", str(out)])
    assert status.exit_code == 0, status.output
    assert "state: finished" in status.output and "round: all 1 trained" in status.output
    assert "last evaluation (e1)" in status.output and "| implications |" in status.output


def test_a_sink_added_when_a_finished_run_is_resumed_gets_its_whole_history(tiny_dir, passages_file, tmp_path):
    out = tmp_path / "run"
    args = tiny_eval_args(tiny_dir, passages_file, out, "--conditions", "base,implications")
    assert runner.invoke(app, args).exit_code == 0
    again = runner.invoke(app, [*args, "--tracking", "tensorboard"])  # tracking may change on a resume
    assert again.exit_code == 0, again.output
    assert "tensorboard" in (out / CONFIG_FILE).read_text()
    logged = scalars(tensorboard(out / TRACKING_DIR / "tensorboard"))
    expected = expected_steps(out)
    assert "eval/implications/loglik" in expected and "self_edits/words" in expected
    assert {tag: [s for s, _ in events] for tag, events in logged.items() if not tag.startswith(LIVE_ONLY)} == {
        tag: steps for tag, steps in expected.items() if not tag.startswith(LIVE_ONLY)
    }


def test_a_sink_whose_package_is_missing_is_one_clear_error_before_the_run(tiny_dir, passages_file, tmp_path,
                                                                           monkeypatch):  # fmt: skip
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    result = runner.invoke(app, tiny_eval_args(tiny_dir, passages_file, tmp_path / "run", "--tracking", "wandb"))
    assert result.exit_code == 2
    assert "tracking: wandb needs the wandb package (pip install 'seal[tracking]')" in " ".join(result.output.split())
    assert not (tmp_path / "run").exists()


# --- a run killed and resumed; a run watched from another process ---------------------------------------------

SLOW = ["--set", "adapt.slots=1", "--set", "adapt.epochs=20", "--rounds", "1"]


def test_a_run_killed_and_resumed_logs_each_step_once(tiny_dir, train_and_eval_files, tmp_path):
    out = tmp_path / "run"
    args = train_args(tiny_dir, train_and_eval_files, out, *SLOW, "--tracking", "tensorboard")
    # Killed after the second of the six training adaptations was recorded, before the last.
    _run_and_kill(args, lambda: _recorded(out, "answers", "r1/train/implications/%") >= 2)
    assert _recorded(out, "answers", "r1/train/implications/%") < 6
    test_rest_em._finish(args)
    logged = scalars(tensorboard(out / TRACKING_DIR / "tensorboard"))
    expected = expected_steps(out)
    assert len(expected["inner/loss_last"]) == 4 + 6 + 2  # one plan per batch: policy 0's four, the round's, policy 1's
    for tag, steps in expected.items():
        if not tag.startswith(LIVE_ONLY):
            assert [step for step, _ in logged[tag]] == steps, tag


def test_status_shows_a_running_rest_em_run_from_another_process(tiny_dir, train_and_eval_files, tmp_path):
    out = tmp_path / "run"
    args = train_args(tiny_dir, train_and_eval_files, out, *SLOW)
    writer = subprocess.Popen([sys.executable, "-m", "seal", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, env=os.environ | {"HF_HUB_OFFLINE": "1"})  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while _recorded(out, "answers", "r1/train/implications/%") < 2:
            assert writer.poll() is None, writer.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the run never reached its training round"
            time.sleep(0.05)
        result = runner.invoke(app, ["status", str(out)])
        assert writer.poll() is None  # it was read while running
    finally:
        writer.kill()
        writer.wait()
    text = " ".join(result.output.split())
    assert result.exit_code == 0, result.output
    assert f"state: running: pid {writer.pid} on " in text and "round: 1 of 1" in text
    assert "phase: round 1: adapting and scoring (6 plans): " in text and "of 6 self-edits adapted and scored" in text
    assert "recent rate" in text and "left in this phase" in text
    assert "last evaluation (e0), mean [95% interval over contexts]:" in text and "| in-context |" in text
    stopped = runner.invoke(app, ["status", str(out), "--watch"])  # a stopped run: printed once, no refresh
    assert stopped.exit_code == 0 and "state: not running (re-run its command to resume)" in stopped.output


def test_status_of_a_phase_whose_units_still_train_tells_its_tokens_and_the_time_they_leave(tmp_path):
    from seal.status import begin_phase, format_status, record_training

    with RunStore(tmp_path, KnowledgeEvalConfig()) as store:
        begin_phase(store, "adapting (4 plans)", "adapt", "answers", ["a", "b", "c", "d"])
        started = time.time()
        record_training(store, "adapting (4 plans)", 250, 1000)
    status = read_status(tmp_path, now=started + 60)
    assert status.phase.done == 0 and status.phase.rate is None and status.phase.tokens[:2] == (250, 1000)
    left = status.phase.seconds_left()
    assert left == pytest.approx(3 * (status.phase.tokens[2] - status.phase.started), abs=1e-6)
    text = format_status(dataclasses.replace(status, holder="pid 1 on here: seal knowledge eval"))
    assert "0 of 4 self-edits adapted and scored (0%)" in text and "trained 250 of 1,000 tokens (25%)" in text
    assert "left in this phase" in text and "no estimate yet" not in text
