"""Continual self-edits: the forgetting matrix, its mitigation arm, resume, and the report."""

import json

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
