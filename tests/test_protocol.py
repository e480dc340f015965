"""The paper's protocol: the recipes hold the release's values, and each protocol option does what it says."""

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from seal.cli import app
from seal.config import (
    ArcTrainConfig,
    KnowledgeContinualConfig,
    KnowledgeCPTConfig,
    KnowledgeEvalConfig,
    KnowledgeTrainConfig,
    load_config,
)
from seal.policy import select
from seal.store import RunStore

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()

# The SEAL release's curated sets as its scripts read them: the first 12 and 10 (task, test input) entries,
# the second test input of a task skipped; the evaluation set is the 8 tasks of its in-context result file.
PAPER_ARC_TRAIN = ["44f52bb0", "4be741c5", "5582e5ca", "5614dbcf", "5bd6f4ac", "6150a2bd", "67e8384a", "6d0aefbc",
                   "6e02f1e3", "8be77c9e", "8d5021e8"]  # fmt: skip
PAPER_ARC_EVAL = ["59341089", "66e6c45b", "68b67ca3", "903d1b4a", "b1fc8b8e", "bc4146bd", "c7d4e6ad", "ce8d95cc"]


def recipe(name, cls):
    return load_config(cls, ROOT / "configs" / name)


def test_the_arc_recipe_holds_the_release_values(shared_data):
    cfg = recipe("paper-arc-llama1b.yaml", ArcTrainConfig)
    p = cfg.policy
    assert (p.lora.rank, p.lora.alpha, p.epochs, p.batch_size, p.lr, p.schedule) == (16, 16, 8, 5, 5e-5, "cosine")
    assert p.lora.targets == ["q_proj", "v_proj", "gate_proj", "down_proj", "up_proj"]
    assert (cfg.sampling.temperature, cfg.sampling.max_new_tokens) == (0.8, 128)
    assert cfg.ttt.max_examples == 250 and cfg.ttt.max_steps == 375
    assert (cfg.adapt.lora.rank, cfg.adapt.lora.alpha, cfg.adapt.batch_size, cfg.adapt.schedule) == (
        128,
        16,
        2,
        "cosine",
    )
    assert cfg.adapt.warmup_steps == 11 and cfg.self_edit.resample_invalid > 0 and cfg.self_edit.unique
    assert cfg.train_data.ids == PAPER_ARC_TRAIN and cfg.eval_data.ids == PAPER_ARC_EVAL
    assert (cfg.k, cfg.eval_k) == (15, 5)
    reference = json.loads((shared_data / "reference-results" / "arc_icl_final_results.json").read_text())
    assert sorted(reference["0"]["task_id"].values()) == PAPER_ARC_EVAL


def test_the_knowledge_recipes_hold_the_release_values():
    train = recipe("paper-knowledge-train-qwen7b.yaml", KnowledgeTrainConfig)
    assert (train.repeats, train.sampling.k, train.sampling.top_p, train.answer.stop_at_newline) == (3, 5, 0.95, False)
    assert (train.round_passages, train.train_passages, train.select, train.keep) == ("fresh", 50, "best", 1)
    assert (train.policy.lora.rank, train.policy.lora.alpha, train.policy.lr, train.policy.epochs) == (64, 128, 3e-4, 2)
    for name in ("paper-knowledge-qwen7b.yaml",):
        single = recipe(name, KnowledgeEvalConfig)
        assert single.answer.stop_at_newline is False and single.sampling.top_p == 0.95
        assert (single.adapt.lora.rank, single.adapt.lora.alpha, single.adapt.epochs, single.adapt.lr) == (
            32,
            64,
            10,
            1e-3,
        )
    cpt = recipe("paper-knowledge-cpt-qwen7b.yaml", KnowledgeCPTConfig)
    assert (cpt.sampling.k, cpt.repeat_passage, cpt.split_lines) == (5, True, False)
    assert (cpt.adapt.epochs, cpt.adapt.batch_size, cpt.adapt.grad_accum, cpt.adapt.lr) == (3, 4, 2, 1e-3)
    full = recipe("paper-knowledge-cpt-full-qwen7b.yaml", KnowledgeCPTConfig)
    assert full.method == "full" and full.passages == 200
    continual = recipe("paper-knowledge-continual-qwen7b.yaml", KnowledgeContinualConfig)
    assert (continual.self_edits_by, continual.steps, continual.sampling.top_p) == ("current", 8, 0.95)


def test_every_paper_recipe_says_which_figure_or_table_it_reproduces():
    for path in sorted((ROOT / "configs").glob("paper-*.yaml")):
        header = "\n".join(line for line in path.read_text().splitlines()[:8] if line.startswith("#"))
        assert any(word in header for word in ("Table", "Figure", "Section")), path.name


def test_best_k_keeps_the_k_highest_rewards_even_without_gain():
    assert select({0: -0.3, 1: -0.1, 2: -0.2}, "best", keep=2) == [1, 2]
    assert select({0: 0.1, 1: None, 2: 0.1, 3: 0.0}, "best", keep=2) == [0, 2]  # ties: the earlier
    assert select({0: 0.1, 1: None}, "best", keep=3) == [0]


@pytest.fixture
def six_passages(tmp_path):
    facts = [("Paris", "The capital of France is Paris.", "What is the capital of France?", "Paris"),
             ("Broncos", "The Denver Broncos won Super Bowl 50.", "Who won Super Bowl 50?", "Denver Broncos"),
             ("Seine", "The Seine flows through Paris.", "Which river flows through Paris?", "the Seine"),
             ("Rhone", "The Rhone flows through Lyon.", "Which river flows through Lyon?", "the Rhone"),
             ("Stadium", "Levi's Stadium is in Santa Clara.", "Where is Levi's Stadium?", "Santa Clara"),
             ("Tower", "The Eiffel Tower is in Paris.", "Where is the Eiffel Tower?", "Paris")]  # fmt: skip
    records = [{"title": t, "context": c, "questions": [{"question": q, "answer": a}]} for t, c, q, a in facts]
    train, held_out = tmp_path / "train.json", tmp_path / "eval.json"
    train.write_text(json.dumps(records[:4]))
    held_out.write_text(json.dumps(records[4:]))
    return train, held_out


TINY = ["adapt.epochs=2", "adapt.lora.rank=4", "policy.lora.rank=4", "sampling.max_new_tokens=12",
        "answer.max_new_tokens=6", "model.dtype=float32", "reward=loglik", "policy.lr=1e-2",
        "policy.batch_size=1"]  # fmt: skip


def train_run(tiny_dir, files, out, *sets):
    flags = [f"model.name={tiny_dir}", f"train_data={files[0]}", f"eval_data={files[1]}", "eval_passages=2",
             "rounds=2", "sampling.k=2", "baselines=[]", *TINY, *sets]  # fmt: skip
    args = ["knowledge", "train", "--out", str(out)] + [x for s in flags for x in ("--set", s)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    cfg = load_config(KnowledgeTrainConfig, None, flags)
    return json.loads((out / "results.json").read_text()), RunStore(out, cfg, read_only=True)


def trained_passages(store: RunStore, r: int) -> set[str]:
    return {k.split("/")[3] for k in store.keys("answers") if k.startswith(f"r{r}/train/implications/")}


def test_fresh_rounds_train_each_on_their_own_passages(tiny_dir, six_passages, tmp_path):
    results, store = train_run(tiny_dir, six_passages, tmp_path / "fresh", "train_passages=2", "round_passages=fresh")
    first, second = trained_passages(store, 1), trained_passages(store, 2)
    assert first == {"p0", "p1"} and second == {"p2", "p3"}  # disjoint blocks in file order
    assert results["n_train_passages"] == 4
    _, same = train_run(tiny_dir, six_passages, tmp_path / "same", "train_passages=2")
    assert trained_passages(same, 1) == trained_passages(same, 2) == {"p0", "p1"}
    too_many = ["knowledge", "train", "--model", str(tiny_dir), "--train-data", str(six_passages[0]), "--eval-data",
                str(six_passages[1]), "--train-passages", "3", "--set", "round_passages=fresh", "--out",
                str(tmp_path / "refused")]  # fmt: skip
    result = runner.invoke(app, too_many)
    assert result.exit_code == 2 and "fresh passages every round need 2 x 3" in result.output


def test_eval_repeats_are_averaged_with_their_spread_and_best_k_reaches_the_policy(tiny_dir, six_passages, tmp_path):
    results, store = train_run(
        tiny_dir, six_passages, tmp_path / "run", "train_passages=2", "eval_times=2", "keep=2", "rounds=1"
    )
    repeats = [k for k in store.keys("answers") if k.startswith("e1/implications/")]
    assert len(repeats) == 2 * 2 and all(k.count("/") == 4 for k in repeats)  # passage x (self-edit, repeat)
    assert results["rounds"][1]["eval_spread"] >= 0.0
    assert results["rounds"][1]["train"]["kept"] == 4 and results["rounds"][1]["train"]["sft_examples"] == 4


def test_cpt_repeats_the_passage_after_each_self_edit_as_the_release_does(tiny_dir, passages3, tmp_path):
    from seal.experiments.knowledge_cpt import KnowledgeCPT

    base = ["conditions=[file]", f"data={passages3}", "passages=1", "paper_subset=false", "sampling.k=2"]
    completions = [{"title": "Paris", "context": "The capital of France is Paris. The Seine flows through it.",
                    "questions": [], "completions": ["It is a capital.", "It has a river."]}]  # fmt: skip
    edits = tmp_path / "edits.json"
    edits.write_text(json.dumps(completions))
    for repeat, passage_copies in ((False, 1), (True, 2)):
        cfg = load_config(KnowledgeCPTConfig, None, [*base, f"self_edits_file={edits}", f"repeat_passage={repeat}"])
        docs = KnowledgeCPT(cfg, tmp_path / f"cpt-{repeat}").documents("file")
        texts = [d if isinstance(d, str) else d.text for d in docs]  # self-edit documents carry their passage
        assert sum("The Seine flows through it." in t for t in texts) == passage_copies


def test_continual_self_edits_in_paper_mode_are_written_by_the_model_merged_so_far(tiny_dir, tmp_path, monkeypatch):
    """self_edits_by: current: the self-edit of step t is sampled from the weights left by step t-1's merge
    (so its sampling sees different weights at each step); initial: all are sampled before any update."""
    from seal.experiments import steps

    seen = []
    real = steps.sample_work

    def fingerprint(lm, *args, **kwargs):
        seen.append(sum(float(p.double().sum()) for n, p in lm.model.named_parameters() if "v_proj" in n))
        return real(lm, *args, **kwargs)

    monkeypatch.setattr(steps, "sample_work", fingerprint)
    data = tmp_path / "passages.json"
    data.write_text(json.dumps([{"title": t, "context": f"{t} is a city.", "questions": [{"question": f"Is {t} a city?",
                                 "answer": "yes"}]} for t in ("Paris", "Lyon", "Nice")]))  # fmt: skip
    base = ["knowledge", "continual", "--model", str(tiny_dir), "--data", str(data), "--sequences", "1", "--steps", "3",
            "--mitigations", "none", "--set", "paper_subset=false", "--set", "adapt.epochs=2", "--set",
            "adapt.lora.rank=4", "--set", "adapt.lora.targets=[v_proj]", "--set", "sampling.max_new_tokens=8",
            "--set", "answer.max_new_tokens=4", "--set", "model.dtype=float32", "--set", "metric=loglik",
            "--set", "adapt.lr=5e-2"]  # fmt: skip
    result = runner.invoke(app, [*base, "--set", "self_edits_by=current", "--out", str(tmp_path / "current")])
    assert result.exit_code == 0, result.output
    assert len(seen) == 3 and len(set(seen)) == 3  # one sampling per step, each from other weights
    seen.clear()
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "initial")])
    assert result.exit_code == 0, result.output
    assert len(seen) == 1  # one batch, before any update
    results = json.loads((tmp_path / "current" / "results.json").read_text())
    assert results["self_edits_by"] == "current" and len(results["arms"]["none"]["matrix_std"]) == 3


def test_an_exported_policy_loads_with_plain_transformers_and_scores_as_the_run_did(tiny_dir, six_passages, tmp_path):
    from transformers import AutoModelForCausalLM

    from seal.engine.sampling import continuation_logprobs
    from seal.models import LoadedModel
    from seal.policy import PolicyOnDemand

    out = tmp_path / "run"
    _, store = train_run(tiny_dir, six_passages, out, "train_passages=2", "rounds=1")
    result = runner.invoke(app, ["export", str(out), "--out", str(tmp_path / "policy-1")])
    assert result.exit_code == 0, result.output
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "policy-1", dtype=torch.float32).eval()
    source = PolicyOnDemand(store_config(out), store)
    source.use(1)
    in_run = source()
    prompts, golds = ["Where is Levi's Stadium?"], [" Santa Clara"]
    expected = continuation_logprobs(in_run, prompts, golds)
    plain = LoadedModel(exported, in_run.tokenizer, "exported", False)
    assert continuation_logprobs(plain, prompts, golds)[0][0] == pytest.approx(expected[0][0], abs=1e-4)
    initial = LoadedModel(AutoModelForCausalLM.from_pretrained(tiny_dir), in_run.tokenizer, "initial", False)
    base = continuation_logprobs(initial, prompts, golds)
    assert base[0][0] != pytest.approx(expected[0][0], abs=1e-4)  # the export is not the base model
    json_out = tmp_path / "edits.json"
    result = runner.invoke(app, ["export", str(out), "--self-edits", "--out", str(json_out)])
    assert result.exit_code == 0, result.output
    from seal.domains.knowledge import load_passages

    exported_edits = load_passages(json_out)
    assert len(exported_edits) == 2 and all(len(p.completions) == 1 for p in exported_edits)
    refused = runner.invoke(app, ["export", str(out), "--round", "5", "--out", str(tmp_path / "nope")])
    assert refused.exit_code == 2 and "no policy of round 5" in " ".join(refused.output.split())


def store_config(run: Path):
    from seal.config import run_config

    return run_config(run / "config.yaml", [KnowledgeTrainConfig]).model
