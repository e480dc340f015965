"""Continual self-edits: the forgetting matrix, its mitigation arm, resume, and the report."""

import json
import sqlite3

import pytest
from typer.testing import CliRunner

from seal.cli import app

runner = CliRunner()


def continual_args(tiny_dir, data, out, *extra):
    return [
        "knowledge", "continual", "--model", str(tiny_dir), "--data", str(data), "--sequences", "1", "--steps", "3",
        "--out", str(out), "--set", "paper_subset=false", "--set", "adapt.epochs=3", "--set", "adapt.lora.rank=4",
        "--set", "adapt.lr=1e-2", "--set", "sampling.max_new_tokens=12", "--set", "answer.max_new_tokens=6",
        "--set", "model.dtype=float32", "--set", "metric=loglik", "--set", "replay_documents=2", *extra,
    ]  # fmt: skip


def test_continual_records_the_lower_triangle_for_both_arms_and_resumes(tiny_dir, passages3, tmp_path, monkeypatch):
    out = tmp_path / "run"
    result = runner.invoke(app, continual_args(tiny_dir, passages3, out))
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert set(results["arms"]) == {"none", "replay"}
    for arm in results["arms"].values():
        matrix = arm["matrix"]
        assert [[x is not None for x in row] for row in matrix] == [
            [True, False, False],
            [True, True, False],
            [True, True, True],
        ]
    # Step 0 is the same in both arms (nothing to replay yet); later steps differ by the replayed documents.
    none, replay = results["arms"]["none"]["matrix"], results["arms"]["replay"]["matrix"]
    assert none[0][0] == replay[0][0] and none[2] != replay[2]
    # The merged update changed the model's answers to the passage it learned.
    assert none[0][0] != results["before"][0]
    assert (out / "report" / "forgetting.png").stat().st_size > 1000

    def no_more_work(*args, **kwargs):
        raise AssertionError("a finished run must not redo work")

    monkeypatch.setattr("seal.experiments.knowledge_continual.train_adapters", no_more_work)
    monkeypatch.setattr("seal.experiments.steps.generate", no_more_work)
    assert runner.invoke(app, continual_args(tiny_dir, passages3, out)).exit_code == 0
    assert json.loads((out / "results.json").read_text()) == results


def test_an_interrupted_arm_resumes_from_its_saved_step_adapters(tiny_dir, passages3, tmp_path, monkeypatch):
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    assert runner.invoke(app, continual_args(tiny_dir, passages3, reference, "--mitigations", "none")).exit_code == 0
    from seal.experiments import knowledge_continual

    real = knowledge_continual.train_adapters
    calls = []

    def dies_at_the_third_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # as a user's Ctrl-C (SIGKILL is tested on ReST-EM runs)
        return real(*args, **kwargs)

    monkeypatch.setattr(knowledge_continual, "train_adapters", dies_at_the_third_step)
    runner.invoke(app, continual_args(tiny_dir, passages3, resumed, "--mitigations", "none"))
    assert not (resumed / "results.json").exists()
    monkeypatch.setattr(knowledge_continual, "train_adapters", real)
    assert runner.invoke(app, continual_args(tiny_dir, passages3, resumed, "--mitigations", "none")).exit_code == 0
    a, b = (json.loads((d / "results.json").read_text()) for d in (reference, resumed))
    assert a == b


def cpt_args(tiny_dir, data, out, *extra):
    return [
        "knowledge", "cpt", "--model", str(tiny_dir), "--data", str(data), "--passages", "3", "--out", str(out),
        "--conditions", "base,passage,implications", "--set", "paper_subset=false", "--set", "adapt.epochs=2",
        "--set", "adapt.lora.rank=4", "--set", "sampling.max_new_tokens=12", "--set", "answer.max_new_tokens=6",
        "--set", "model.dtype=float32", "--set", "reward=loglik", *extra,
    ]  # fmt: skip


def test_cpt_trains_one_update_on_all_passages_lora_and_full(tiny_dir, passages3, tmp_path):
    for method in ("lora", "full"):
        out = tmp_path / method
        result = runner.invoke(app, cpt_args(tiny_dir, passages3, out, "--method", method))
        assert result.exit_code == 0, result.output
        results = json.loads((out / "results.json").read_text())
        conditions = results["conditions"]
        assert results["n_questions"] == 3 and set(conditions) == {"base", "passage", "implications"}
        # passage condition: 3 passage documents x 2 epochs, one document per step
        assert conditions["passage"]["training"]["steps"] == 6
        assert conditions["implications"]["training"]["steps"] > 6  # self-edit lines added to the passages
        assert conditions["passage"]["macro"]["loglik"] != conditions["base"]["macro"]["loglik"]
        assert (out / "report" / "conditions.png").exists()


def test_the_library_arm_routes_each_question_to_its_own_passage_and_keeps_what_it_learned(
    tiny_dir, passages3, tmp_path
):
    out = tmp_path / "run"
    args = continual_args(tiny_dir, passages3, out, "--mitigations", "none,library")
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    library = results["arms"]["library"]
    routers = library["routing"]["routers"]
    assert set(routers) == {"minilm", "hidden"} and routers["minilm"]["accuracy"] == 1.0
    assert routers["minilm"]["questions"] == 1 + 2 + 3 and routers["minilm"]["errors"] == 0
    # Nothing is merged: each passage is answered by its own adapter at every later step, as right after it was
    # learned, so the library retains all of it (the none arm's merges move the earlier passages).
    for metric in ("loglik", "verdict"):
        matrix = library["metrics"][metric]["matrix"]
        for j in range(3):
            assert matrix[2][j] == pytest.approx(matrix[j][j], abs=1e-4)
    assert library["metrics"]["loglik"]["retention"]["mean"] == pytest.approx(1.0, abs=1e-3)
    assert [ci is None for ci in library["metrics"]["loglik"]["retention_by_step"]] == [True, False, False]
    assert library["matrix"] == library["metrics"]["loglik"]["matrix"]  # the top level keeps the run's metric
    assert set(results["metrics"]) == {"loglik", "verdict"}
    stored = sqlite3.connect(out / "store.sqlite").execute(
        "SELECT key, value FROM records WHERE kind = 'answers' AND key LIKE 's0/library/t2/%'"
    )
    assert {k: [q["route"] for q in json.loads(v)] for k, v in stored} == {
        f"s0/library/t2/p{j}/0": [[j]] for j in range(3)
    }
    costs = json.loads((out / "costs.json").read_text())["arms"]
    assert costs["library"]["adapters_kept"] == 3 and costs["none"]["adapters_kept"] == 0
    assert costs["library"]["adapter_bytes"] > 0 and costs["library"]["answer_seconds_per_question"] > 0
    report = (out / "report" / "report.md").read_text()
    assert "Retention after the last step" in report and "Library routing" in report and "Costs" in report
    assert (out / "report" / "retention.png").stat().st_size > 1000
    assert (out / "report" / "forgetting_verdict.png").exists()


def test_a_gate_that_every_update_fails_rejects_it_and_one_that_all_pass_merges_as_none_does(
    tiny_dir, passages3, tmp_path
):
    strict = tmp_path / "strict"
    args = continual_args(tiny_dir, passages3, strict, "--mitigations", "none,gate", "--set", "gate.max_drop=-1000")
    assert runner.invoke(app, args).exit_code == 0
    results = json.loads((strict / "results.json").read_text())
    gate = results["arms"]["gate"]
    decisions = gate["gate"][0]
    assert decisions[0]["decision"] == "accept"  # step 0: nothing earlier to protect
    for d in decisions[1:]:
        assert d["decision"] == "reject" and d["scale"] == 0.0 and set(d["drops"]) == {"1.0", "0.5", "0.25"}
    # A rejected update leaves the model as it was: the first passage scores after steps 1 and 2 as after step 0.
    matrix = gate["metrics"]["loglik"]["matrix"]
    assert matrix[1][0] == pytest.approx(matrix[0][0], abs=1e-4) and matrix[2][0] == pytest.approx(
        matrix[0][0], abs=1e-4
    )

    lenient = tmp_path / "lenient"
    args = continual_args(tiny_dir, passages3, lenient, "--mitigations", "none,gate", "--set", "gate.max_drop=1000")
    assert runner.invoke(app, args).exit_code == 0
    results = json.loads((lenient / "results.json").read_text())
    assert all(d["decision"] == "accept" for d in results["arms"]["gate"]["gate"][0])
    for row_gate, row_none in zip(results["arms"]["gate"]["matrix"], results["arms"]["none"]["matrix"]):
        assert row_gate == pytest.approx(row_none, abs=1e-4)
    assert "Gated merges after the first step: 2 accept" in (lenient / "report" / "report.md").read_text()


def test_a_gated_merge_that_drops_the_probe_score_is_not_merged_whole(tiny_dir, passages3, tmp_path):
    out = tmp_path / "run"
    args = continual_args(tiny_dir, passages3, out, "--mitigations", "gate", "--set", "gate.max_drop=0",
                          "--set", "adapt.lr=0.1")  # fmt: skip
    assert runner.invoke(app, args).exit_code == 0
    decisions = json.loads((out / "results.json").read_text())["arms"]["gate"]["gate"][0][1:]
    for d in decisions:
        drops = {float(k): v for k, v in d["drops"].items()}
        assert d["scale"] == max([s for s, drop in drops.items() if drop <= 0], default=0.0)
        assert (d["decision"] == "accept") == (drops[1.0] <= 0)
