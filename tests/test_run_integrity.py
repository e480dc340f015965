"""One writer per run directory, and damaged files found: the run lock, checked adapters, a damaged
store or config, a full disk. Each failure is one clear error, or a rebuild to the undamaged run's records."""

import errno
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

import seal.experiments.knowledge_eval  # noqa: F401 - imported here, so a refused command is timed alone
import test_cli
import test_rest_em
from seal.cli import app
from seal.store import LOCK_FILE, STORE_FILE, RunDamaged, RunLocked, RunOutOfSpace, RunStore
from test_cli import tiny_eval_args
from test_continual import continual_args
from test_rest_em import ROOT, _recorded, _records, _run_and_kill, _without_times, train_args

passages_file, train_and_eval_files = test_cli.passages_file, test_rest_em.train_and_eval_files  # their fixtures

runner = CliRunner()


class Tiny(BaseModel):
    lr: float = 1e-3


def one_line(output: str) -> str:
    """The CLI's output with the console's wrapping undone."""
    return " ".join(output.split())


def holder(run: Path) -> str:
    try:
        return (run / LOCK_FILE).read_text()
    except FileNotFoundError:
        return ""


def eval_args(tiny_dir, data, out) -> list[str]:
    return tiny_eval_args(tiny_dir, data, out, "--conditions", "base,passage,implications")


# --- the run lock ------------------------------------------------------------------------------------------


def test_a_writer_holds_the_lock_until_close_and_takes_it_again_to_write_after(tmp_path):
    first = RunStore(tmp_path, Tiny())
    with pytest.raises(RunLocked) as refused:
        RunStore(tmp_path, Tiny())
    message = str(refused.value)
    assert message.startswith(f"{tmp_path} is in use by pid {os.getpid()} on {socket.gethostname()} (")
    assert "use another --out directory" in message and "\n" not in message
    with RunStore(tmp_path, None, read_only=True) as reader:
        assert reader.all("answers") == {}  # a reader needs no lock
    first.close()
    assert holder(tmp_path) == ""  # the holder's line goes with the lock

    second = RunStore(tmp_path, Tiny())
    assert first.all("answers") == {}  # reading a closed store takes no lock
    with pytest.raises(RunLocked):
        first.put("answers", "a", 1)  # writing does
    second.close()
    first.put("answers", "a", 1)
    with pytest.raises(RunLocked):
        RunStore(tmp_path, Tiny())
    first.close()
    with RunStore(tmp_path, Tiny()) as third:
        assert third.get("answers", "a") == 1


def test_a_second_command_on_a_run_in_use_is_refused_at_once_and_the_first_finishes(tiny_dir, passages_file, tmp_path):
    out = tmp_path / "run"
    args = [*eval_args(tiny_dir, passages_file, out), "--set", "adapt.epochs=20"]  # still running when refused
    first = subprocess.Popen([sys.executable, "-m", "seal", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, env=os.environ | {"HF_HUB_OFFLINE": "1"})  # fmt: skip
    deadline = time.monotonic() + 120
    while f"pid {first.pid} " not in holder(out):
        assert first.poll() is None, first.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the first command never took the lock"
        time.sleep(0.01)
    began = time.monotonic()
    second = runner.invoke(app, args)
    assert time.monotonic() - began < 1.0
    assert second.exit_code == 2 and isinstance(second.exception, SystemExit)
    assert f"is in use by pid {first.pid} on {socket.gethostname()} (" in one_line(second.output)
    assert "knowledge eval" in one_line(second.output)  # the holder's command line
    assert first.poll() is None, "the first command ended before the second was refused: make it slower"
    assert first.wait(timeout=300) == 0, first.stderr.read().decode()[-2000:]
    assert json.loads((out / "results.json").read_text())["n_passages"] == 2


def test_a_lock_left_by_a_killed_command_does_not_block_the_next(tiny_dir, passages_file, tmp_path):
    out = tmp_path / "run"
    args = eval_args(tiny_dir, passages_file, out)
    _run_and_kill(args, lambda: _recorded(out, "answers", "%") > 0)  # killed mid-run, holding the lock
    assert holder(out)  # the killed holder's line is still there, its lock is not
    resumed = runner.invoke(app, args)
    assert resumed.exit_code == 0, resumed.output
    assert holder(out) == ""


# --- damaged files -----------------------------------------------------------------------------------------


def cut_short(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_a_cut_short_policy_adapter_is_found_and_its_round_fine_tuned_again_to_the_same_records(
    tiny_dir, train_and_eval_files, tmp_path, caplog
):
    out = tmp_path / "run"
    args = train_args(tiny_dir, train_and_eval_files, out, "--rounds", "1")
    assert runner.invoke(app, args).exit_code == 0
    written, results = _records(out), _without_times(json.loads((out / "results.json").read_text()))
    with RunStore(out, None, read_only=True) as store:
        files = store.recorded_files("policy/round-1")
    assert set(files) == {"README.md", "adapter_config.json", "adapter_model.safetensors"}
    adapter = out / "policy" / "round-1" / "adapter_model.safetensors"
    size = adapter.stat().st_size
    cut_short(adapter)

    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert f"{adapter} has {size // 2} bytes where {size} were written: this policy round is fine-tuned again" in (
        caplog.text
    )
    assert adapter.stat().st_size == size
    assert _records(out) == written
    with RunStore(out, None, read_only=True) as store:
        assert store.recorded_files("policy/round-1") == files  # the same adapter, to the byte
    assert _without_times(json.loads((out / "results.json").read_text())) == results


def test_a_damaged_continual_step_adapter_is_trained_again_from_its_plan(tiny_dir, passages3, tmp_path, caplog):
    reference, damaged = tmp_path / "reference", tmp_path / "damaged"
    assert runner.invoke(app, continual_args(tiny_dir, passages3, reference, "--mitigations", "none")).exit_code == 0
    shutil.copytree(reference, damaged)
    db = sqlite3.connect(damaged / STORE_FILE)
    with db:  # the arm's last step not answered yet, as in a run stopped there
        db.execute("DELETE FROM records WHERE kind = 'answers' AND key LIKE 's0/none/t2/%'")
    db.close()
    step = damaged / "continual" / "s0" / "none" / "step-0" / "adapter_model.safetensors"
    step.write_bytes(b"\0" + step.read_bytes()[1:])

    resumed = runner.invoke(app, continual_args(tiny_dir, passages3, damaged, "--mitigations", "none"))
    assert resumed.exit_code == 0, resumed.output
    assert f"{step} differs from what was written (sha256): this step is trained again from its saved plan" in (
        caplog.text
    )
    assert _records(damaged) == _records(reference)
    with RunStore(damaged, None, read_only=True) as store, RunStore(reference, None, read_only=True) as written:
        assert store.recorded_files("continual/s0/none/step-0") == written.recorded_files("continual/s0/none/step-0")
    assert json.loads((damaged / "results.json").read_text()) == json.loads((reference / "results.json").read_text())


def test_a_cut_short_store_is_one_clear_error(tiny_dir, passages_file, tmp_path):
    out = tmp_path / "run"
    args = tiny_eval_args(tiny_dir, passages_file, out, "--conditions", "base")
    assert runner.invoke(app, args).exit_code == 0
    cut_short(out / STORE_FILE)
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and isinstance(again.exception, SystemExit)
    assert "store.sqlite is damaged (database disk image is malformed); the run's records cannot be read" in (
        one_line(again.output)
    )
    with pytest.raises(RunDamaged, match="restore the file from a backup") as damaged:
        RunStore(out, None, read_only=True)
    assert "\n" not in str(damaged.value)
    (out / STORE_FILE).write_bytes(b"not a database" * 1000)
    with pytest.raises(RunDamaged, match=r"is damaged \(file is not a database\)"):
        RunStore(out, None, read_only=True)
    assert holder(out) == ""  # the refused command released the lock


@pytest.mark.parametrize(
    "text, problem",
    [("model: {name: [tiny\n", "not valid YAML"), ("", "expected a mapping of config fields")],
    ids=["not-yaml", "empty"],
)
def test_a_config_file_that_is_not_a_config_is_one_clear_error(tiny_dir, passages_file, tmp_path, text, problem):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text(text)
    result = runner.invoke(app, eval_args(tiny_dir, passages_file, out))
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert f"config.yaml: {problem}" in one_line(result.output)
    assert "repair it (it holds the run's config) or use another --out directory" in one_line(result.output)


# --- a full disk -------------------------------------------------------------------------------------------


def test_a_full_disk_mid_batch_keeps_whole_batches_and_the_run_resumes_to_the_same_records(
    tiny_dir, passages_file, tmp_path, monkeypatch
):
    reference, full = tmp_path / "reference", tmp_path / "full"
    assert runner.invoke(app, eval_args(tiny_dir, passages_file, reference)).exit_code == 0
    batches: list[list[str]] = []  # the keys of each batch of answers written

    class FillsUp(sqlite3.Connection):
        """The disk fills up on the second batch of answers, after the batch's first row is written."""

        def executemany(self, sql, rows):
            rows = list(rows)
            if rows[0][0] == "answers":
                batches.append([key for _, key, _ in rows])
                if len(batches) == 2:
                    super().executemany(sql, rows[:1])
                    raise sqlite3.OperationalError("database or disk is full")
            return super().executemany(sql, rows)

    real_connect = sqlite3.connect
    with monkeypatch.context() as patch:
        patch.setattr(sqlite3, "connect", lambda *args, **kwargs: real_connect(*args, factory=FillsUp, **kwargs))
        stopped = runner.invoke(app, eval_args(tiny_dir, passages_file, full))
    assert stopped.exit_code == 2 and len(batches) == 2 and len(batches[1]) > 1
    assert (
        f"no space left on the device writing {full / STORE_FILE}; the run keeps everything it finished before this "
        "write: free some space and re-run the same command to resume"
    ) in one_line(stopped.output)
    kept = {key for kind, key in _records(full) if kind == "answers"}
    assert kept == set(batches[0])  # the batch before whole, nothing of the failed one

    resumed = runner.invoke(app, eval_args(tiny_dir, passages_file, full))
    assert resumed.exit_code == 0, resumed.output
    assert _records(full) == _records(reference)


def test_a_full_disk_writing_an_adapter_leaves_no_partial_directory_and_one_clear_error(tmp_path):
    with pytest.raises(RunOutOfSpace) as full:
        with RunStore(tmp_path, Tiny()) as store:
            with store.checked_directory("policy/round-1") as partial:
                partial.mkdir()
                (partial / "adapter_config.json").write_text("{}")
                raise OSError(errno.ENOSPC, "No space left on device", str(partial / "adapter_model.safetensors"))
    assert str(full.value) == (
        f"no space left on the device writing {tmp_path}/policy/round-1.partial/adapter_model.safetensors; "
        "the run keeps everything it finished before this write: free some space and re-run the same command to resume"
    )
    assert list((tmp_path / "policy").iterdir()) == [] and store.recorded_files("policy/round-1") is None
