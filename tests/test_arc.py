"""ARC: grids, augmentations and their inverses, text format, self-edit rules, TTT data, voting, and runs."""

import json
import random

import pytest
from typer.testing import CliRunner

from seal.cli import app
from seal.domains.arc import augment
from seal.domains.arc.format import grid_text, leave_out_sequences, parse_grid, tokens_per_grid
from seal.domains.arc.grids import Pair, Task, load_tasks, to_grid
from seal.domains.arc.selfedit import parse_self_edit, plan_json
from seal.domains.arc.ttt import (
    attempts_from_outputs,
    release_views,
    release_vote,
    solved,
    training_documents,
    views,
    vote,
)
from seal.domains.knowledge import DataError

runner = CliRunner()


def random_grid(rng: random.Random, max_side: int = 12):
    h, w = rng.randint(1, max_side), rng.randint(1, max_side)
    return tuple(tuple(rng.randint(0, 9) for _ in range(w)) for _ in range(h))


def every_transform(rng: random.Random) -> list[augment.Transform]:
    out = [augment.IDENTITY, *augment.VOTING_VIEWS, augment.colour_permutation(rng), augment.translate(2, 5)]
    for name in augment.FAMILIES:
        out += augment.family(name, rng)
    return out + [t.then(augment.colour_permutation(rng)) for t in augment.GEOMETRIC]


def test_every_augmentation_composed_with_its_inverse_is_the_identity():
    rng = random.Random(0)
    for _ in range(100):
        grid = random_grid(rng)
        for t in every_transform(rng):
            assert t.inverse(t(grid)) == grid, t.name


def test_augmentations_do_what_their_names_say():
    g = ((1, 2), (3, 4))
    assert augment.ROT90(g) == ((3, 1), (4, 2))
    assert augment.FLIP_LR(g) == ((2, 1), (4, 3)) and augment.FLIP_UD(g) == ((3, 4), (1, 2))
    assert augment.TRANSPOSE(g) == ((1, 3), (2, 4))
    assert augment.REFLECT_LR(g) == ((1, 2, 2, 1), (3, 4, 4, 3))
    assert augment.UPSCALE(((5,),)) == ((5, 5), (5, 5))
    assert augment.TILE_BOTH(((7,),)) == ((7, 7), (7, 7))
    assert augment.translate(0, 1)(((1, 2, 3),)) == ((3, 1, 2),)
    permuted = augment.colour_permutation(random.Random(1))(((0, 1, 2),))
    assert permuted[0][0] == 0 and set(permuted[0][1:]) <= set(range(1, 10))  # background kept


def test_an_augmented_task_over_30x30_is_dropped():
    big = tuple(tuple([1] * 20) for _ in range(20))
    task = Task("t", (Pair(big, big),), (Pair(big, big),))
    assert augment.apply_to_task(augment.UPSCALE, task) is None
    assert augment.apply_to_task(augment.ROT90, task) is not None


def test_voting_picks_the_majority_then_the_first_seen():
    a, b, c = ((1,),), ((2,),), ((3,),)
    assert vote([b, a, a, None, c, a, b]) == [a, b]
    assert vote([c, b, None]) == [c, b]  # ties: the first seen
    assert vote([None, None]) == []


def test_attempts_are_mapped_back_through_each_views_inverse_before_voting():
    demo = Pair(((1, 2), (3, 4)), ((4, 3), (2, 1)))
    task = Task("t", (demo, demo), (Pair(((5, 6), (7, 8)), ((8, 7), (6, 5))),))
    task_views = views(task, 4, "compact", seed=0)
    # Each view's "model" answers the right grid in the view's own frame.
    outputs = [grid_text(v.transform(task.test[0].output)) for v in task_views]
    attempts = attempts_from_outputs(task, task_views, outputs, "compact", 2)
    assert attempts == [[task.test[0].output]] and solved(task, attempts)
    assert not solved(task, attempts_from_outputs(task, task_views, ["garbage"] * 4, "compact", 2))


@pytest.mark.parametrize("style", ["compact", "spaced"])
def test_grid_text_round_trips_and_parsing_stops_at_the_grid(style):
    rng = random.Random(3)
    for _ in range(20):
        grid = random_grid(rng)
        assert parse_grid(grid_text(grid, style), style) == grid
        assert parse_grid(grid_text(grid, style) + "\n\ninput:\n12", style) == grid
    assert parse_grid("12\n345", style) is None  # ragged
    assert parse_grid("no grid here", style) is None


def test_tokens_per_grid_is_measured_with_the_tokenizer(tiny_lm):
    grid = ((1, 2, 3),) * 3
    assert tokens_per_grid(tiny_lm.tokenizer, grid, "compact") >= 3


def test_leave_n_out_sequences():
    demos = tuple(Pair(((i,),), ((i + 1,),)) for i in range(4))
    task = Task("t", demos, (Pair(((9,),), None),))
    assert len(leave_out_sequences(task, (1,), "compact")) == 4
    assert len(leave_out_sequences(task, (1, 2), "compact")) == 4 + 6 * 2
    prompt, completion = leave_out_sequences(task, (1,), "compact")[0]
    assert completion == "1" and prompt.endswith("input:\n0\noutput:\n") and "input:\n1\noutput:\n2" in prompt


PAPER_STYLE = {
    "data_generation": {"use_basic_augmentations": True, "use_size_augmentations": False,
                        "use_chain_augmentations": False, "use_repeat_augmentations": True},
    "training": {"strategy": "train_using_output_tokens", "learning_rate": 1e-4, "num_train_epochs": 3},
}  # fmt: skip


def test_the_parser_accepts_nested_flat_and_wrapped_configs():
    plan = parse_self_edit(json.dumps(PAPER_STYLE))
    assert plan.valid and plan.families == ("basic", "repeat") and plan.strategy == "output"
    assert plan.lr == 1e-4 and plan.epochs == 3
    flat = {**PAPER_STYLE["data_generation"], **PAPER_STYLE["training"], "strategy": "train_using_all_tokens"}
    assert parse_self_edit("Sure! ```json\n" + json.dumps(flat) + "\n``` Good luck.").strategy == "all"
    assert parse_self_edit(plan_json(("size",), "all", 5e-5, 1)).families == ("size",)


@pytest.mark.parametrize(
    "text, reason",
    [
        ("I would rotate the grids.", "no JSON object"),
        (json.dumps({"training": PAPER_STYLE["training"]}), "missing key(s): use_basic_augmentations"),
        (
            json.dumps({**PAPER_STYLE, "training": {**PAPER_STYLE["training"], "strategy": "train_hard"}}),
            "unknown strategy",
        ),
        (
            json.dumps({**PAPER_STYLE, "training": {**PAPER_STYLE["training"], "learning_rate": "fast"}}),
            "learning_rate",
        ),
        (json.dumps({**PAPER_STYLE, "training": {**PAPER_STYLE["training"], "learning_rate": 0.5}}), "learning_rate"),
        (
            json.dumps({**PAPER_STYLE, "training": {**PAPER_STYLE["training"], "num_train_epochs": 2.5}}),
            "num_train_epochs",
        ),
        (
            json.dumps(
                {**PAPER_STYLE, "data_generation": {**PAPER_STYLE["data_generation"], "use_size_augmentations": "yes"}}
            ),
            "true or false",
        ),
        ('{"data_generation": {"use_basic', "no JSON object"),  # cut off mid-way, as a sampler at its token limit
        ('{"training": "strategy"}', "must be JSON objects"),  # the embedded model wrote such things
        ('{"data_generation": true}', "must be JSON objects"),
    ],
)
def test_the_parser_rejects_bad_self_edits_with_a_reason(text, reason):
    plan = parse_self_edit(text)
    assert not plan.valid and reason in plan.reason


def small_task() -> Task:
    rng = random.Random(5)
    demos = tuple(Pair(g, augment.FLIP_LR(g)) for g in (random_grid(rng, 4) for _ in range(3)))
    return Task("flip", demos, (Pair(((1, 2),), ((2, 1),)),))


def test_ttt_data_follows_the_plan_dedupes_caps_and_counts_steps():
    task = small_task()
    rules = dict(style="compact", leave_out=(1,), max_examples=1000, batch_size=2, max_steps=1000, seed=0)
    plain = training_documents(task, parse_self_edit(plan_json((), "output", 1e-4, 1)), **rules)
    assert len(plain.documents) == 3 and all(isinstance(d, tuple) for d in plain.documents)
    augmented = training_documents(task, parse_self_edit(plan_json(("basic", "size"), "all", 1e-4, 1)), **rules)
    assert len(augmented.documents) > 3 and all(isinstance(d, str) for d in augmented.documents)
    assert len(set(augmented.documents)) == len(augmented.documents)
    capped = training_documents(
        task, parse_self_edit(plan_json(("basic",), "output", 1e-4, 1)), **{**rules, "max_examples": 5}
    )
    assert len(capped.documents) == 5 and capped.documents[:3] == plain.documents
    too_long = training_documents(
        task, parse_self_edit(plan_json(("basic",), "output", 1e-4, 10)), **{**rules, "max_steps": 20}
    )
    assert not too_long.plan.valid and "optimiser steps" in too_long.plan.reason


def test_loading_validates_grids_and_names_the_problem(tmp_path):
    assert to_grid([[0, 1], [2, 3]], "x") == ((0, 1), (2, 3))
    for bad, message in [
        ([[0, 10]], "not an integer 0-9"),
        ([[0, 1], [2]], "different lengths"),
        ([[0] * 31], "larger than 30x30"),
        ([], "non-empty"),
        ([[True]], "not an integer"),
    ]:
        with pytest.raises(DataError, match=message):
            to_grid(bad, "task x")
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"t1": {"train": [{"input": [[1]]}], "test": [{"input": [[1]]}]}}))
    with pytest.raises(DataError, match=r"t1.train\[0\]: missing field 'output'"):
        load_tasks(path)
    path.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_tasks(path)


def test_the_shipped_curated_sets_load_with_solutions(shared_data):
    arc = shared_data / "arc"
    tasks = load_tasks(arc / "arc-agi_evaluation_challenges_filtered_1B_eval_set.json",
                       arc / "arc-agi_evaluation_solutions_filtered_1B_eval_set.json")  # fmt: skip
    assert len(tasks) >= 8 and all(p.output is not None for t in tasks for p in t.test)


# --- runs ------------------------------------------------------------------------------------------------


TINY = [
    "--set",
    "model.dtype=float32",
    "--set",
    "adapt.lora.rank=4",
    "--set",
    "ttt.max_examples=4",
    "--set",
    "ttt.views=2",
    "--set",
    "sampling.max_new_tokens=24",
    "--set",
    "ttt.max_output_tokens=24",
    "--set",
    "oracle.epochs=1",
    "--set",
    "ttt.max_tokens=500",
]


def test_arc_eval_runs_records_every_pair_and_resumes(tiny_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    small = ["--set", "data.ids=[59341089, 66e6c45b]"]  # grids small enough for the tiny model's 512 positions
    args = ["arc", "eval", "--model", str(tiny_dir), "--k", "2", "--out", str(out), *small, *TINY]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    conditions = results["conditions"]
    assert conditions["self-edit"]["pairs"] == 4 and conditions["oracle"]["pairs"] == 2
    assert conditions["oracle"]["invalid"] == 0  # the fixed plan always parses; the tiny model's rarely do
    assert (out / "report" / "success.png").exists()

    def no_more_work(*args, **kwargs):
        raise AssertionError("a finished run must not redo work")

    monkeypatch.setattr("seal.experiments.arc_steps.adapt_batch", no_more_work)
    monkeypatch.setattr("seal.experiments.arc_steps.generate", no_more_work)
    monkeypatch.setattr("seal.experiments.steps.generate", no_more_work)
    assert runner.invoke(app, args).exit_code == 0
    assert json.loads((out / "results.json").read_text()) == results


def test_arc_train_completes_a_round_and_fine_tunes_on_the_solving_self_edits(tiny_dir, tmp_path, monkeypatch):
    """One round on 2 training tasks. The tiny model writes no valid JSON and solves nothing, so its
    training self-edits are given (valid plans, in the store before the run) and the first pair's
    reward is forced: exactly that self-edit must reach the policy's fine-tuning."""
    from seal.config import ArcTrainConfig, load_config
    from seal.domains.arc import ttt
    from seal.store import RunStore

    out = tmp_path / "run"
    flags = {"model.name": str(tiny_dir), "train_data.tasks": 2, "eval_data.tasks": 1, "rounds": 1, "k": 2, "eval_k": 1}
    extra = ["baselines=[]", "policy.lora.rank=4", "sampling.max_new_tokens=8"] + TINY[1::2]
    cfg = load_config(ArcTrainConfig, None, [f"{k}={v}" for k, v in flags.items()] + extra)
    store = RunStore(out, cfg)
    tasks = load_tasks(cfg.train_data.challenges, cfg.train_data.solutions)[:2]
    given = {f"r1/self-edit/{t.id}/{i}": plan_json(("basic",), "output", 1e-3, 1) for t in tasks for i in range(2)}
    store.put_many("self_edits", [(key, {"prompt": f"prompt for {key}", "text": text}) for key, text in given.items()])
    store.close()
    real, calls = ttt.solved, []

    def first_training_pair_solves(task, attempts):
        calls.append(task.id)
        return len(calls) == 1 or real(task, attempts)

    monkeypatch.setattr(ttt, "solved", first_training_pair_solves)
    args = ["arc", "train", "--model", str(tiny_dir), "--train-tasks", "2", "--eval-tasks", "1", "--rounds", "1",
            "--k", "2", "--eval-k", "1", "--out", str(out)] + [x for e in extra for x in ("--set", e)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert [r["round"] for r in results["rounds"]] == [0, 1]
    train = results["rounds"][1]["train"]
    assert train["pairs"] == 4 and train["invalid"] == 0 and train["sft_examples"] == 1
    assert train["choices"] == {"lr_median": 1e-3, "lr_median_solved": 1e-3, "lr_median_unsolved": 1e-3,
                                "epochs_median": 1, "output_loss": 1.0}  # fmt: skip
    assert (out / "policy" / "round-1" / "adapter_config.json").exists()
    assert (out / "report" / "success_by_round.png").exists()


def test_a_conditions_choices_say_which_learning_rates_solved_their_task():
    from seal.experiments.arc_steps import choices

    def record(lr, epochs, strategy, solved):
        return {"solved": solved, "settings": {"families": ["basic"], "strategy": strategy, "lr": lr, "epochs": epochs}}

    records = [
        record(2e-3, 3, "all", True), record(4e-3, 1, "all", True), record(1e-5, 2, "output", False),
        record(1e-4, 3, "all", False), record(3e-4, 2, "all", False), {"solved": False, "valid": False},
    ]  # fmt: skip
    assert choices(records) == {"lr_median": 3e-4, "lr_median_solved": 3e-3, "lr_median_unsolved": 1e-4,
                                "epochs_median": 2, "output_loss": 0.2}  # fmt: skip
    assert choices(records[-1:]) is None  # only an invalid plan: nothing was trained


# --- the release's views and voting, and resampling ------------------------------------------------------


def test_release_views_leave_one_demonstration_out_permute_and_add_five_geometric_views():
    task = small_task()  # 3 demonstrations
    release = release_views(task, "compact", seed=0)
    identity = [v for v in release if v.group == "identity"]
    geometric = [v for v in release if v.group != "identity"]
    assert 3 <= len(identity) <= 9  # 3 subsets, each with up to 2 more orders, duplicates dropped
    assert all(v.prompt.count("input:") == 3 for v in release)  # 2 demonstrations shown + the query
    assert sorted(v.group for v in geometric) == ["flip_lr", "flip_ud", "rot180", "rot270", "transpose"]
    # answering each view correctly (in its own frame) and mapping back gives the solution
    outputs = [grid_text(v.transform(task.test[0].output), "compact") for v in release]
    attempts = attempts_from_outputs(task, release, outputs, "compact", 2, voting="release")
    assert solved(task, attempts) and attempts[0][0] == task.test[0].output


def test_release_vote_takes_three_candidates_per_group_then_the_most_common_with_identity_breaking_ties():
    a, b, c = ((1,),), ((2,),), ((3,),)
    # candidates: all -> a b c; identity -> a b a (a row-majority stand-in); transpose -> a a a;
    # flip_ud -> c c c; flip_lr -> b b b: a 6 votes, b and c 4, and b wins the tie on the identity views
    candidates = [("identity", a), ("identity", a), ("identity", b), ("transpose", a), ("flip_lr", b), ("flip_ud", c)]
    assert release_vote(candidates) == [a, b]
    # all -> c b a; identity -> c c c; transpose -> b b b; flip_lr -> a a a: 4 votes each, so the identity
    # views decide (c), then the candidate seen first (b)
    tied = [("identity", c), ("identity", c), ("transpose", b), ("transpose", b), ("flip_lr", a)]
    assert release_vote(tied) == [c, b]
    assert release_vote([("identity", None)]) == []


def test_unparsable_self_edits_are_sampled_again_until_they_parse_and_repeats_are_refused(
    tiny_dir, tmp_path, monkeypatch
):
    """The tiny model writes no JSON: a scripted sampler answers prose first, then a repeat of the first
    configuration, then a new one. Each attempt's keys are recorded, and a re-run redoes nothing."""
    from seal.experiments import steps

    valid = [plan_json(("basic",), "output", 1e-3, 1), plan_json(("size",), "all", 1e-3, 2)]
    calls = []

    def scripted(lm, item, sampling, seed, prefix, grammar=None):
        calls.append(prefix)
        _, batch = item
        attempt = 0 if "#" not in prefix else int(prefix.rsplit("#", 1)[1])
        texts = {0: ["no json here"] * len(batch), 1: [valid[0]] * len(batch), 2: [valid[1]] * len(batch)}
        return texts[attempt]

    monkeypatch.setattr(steps, "sample_work", scripted)
    out = tmp_path / "run"
    small = ["--set", "data.ids=[59341089]", "--conditions", "self-edit", "--set", "self_edit.resample_invalid=3",
             "--set", "self_edit.unique=true"]  # fmt: skip
    args = ["arc", "eval", "--model", str(tiny_dir), "--k", "2", "--out", str(out), *small, *TINY]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    from seal.config import ArcEvalConfig, load_config
    from seal.store import RunStore

    store = RunStore(out, load_config(ArcEvalConfig, out / "config.yaml"), read_only=True)
    edits = store.all("self_edits")
    texts = [edits[f"self-edit/59341089/{i}"]["text"] for i in range(2)]
    assert texts == valid  # the first took attempt 1; the second repeated it and took attempt 2
    assert store.get("resamples", "self-edit/attempt-1") == ["59341089/0", "59341089/1"]
    assert store.get("resamples", "self-edit/attempt-2") == ["59341089/1"]
    assert store.get("resamples", "self-edit/attempt-3") == []
    results = json.loads((out / "results.json").read_text())
    assert results["conditions"]["self-edit"]["invalid"] == 0
    calls.clear()
    assert runner.invoke(app, args).exit_code == 0 and calls == []


def test_task_selection_keeps_the_tasks_the_oracle_solves_and_splits_them_into_files(tiny_dir, tmp_path, monkeypatch):
    """Two small candidates, one oracle try each; the first is made to count as solved: it alone is kept,
    and the task files it is written to load as ARC tasks with their solutions."""
    from seal.domains.arc import ttt

    real, calls = ttt.solved, []

    def first_solves(task, attempts):
        calls.append(task.id)
        return len(calls) == 1 or real(task, attempts)

    monkeypatch.setattr(ttt, "solved", first_solves)
    out = tmp_path / "select"
    args = ["arc", "select", "--model", str(tiny_dir), "--candidates", "2", "--tries", "1", "--max-side", "5",
            "--set", "eval_fraction=0.5", "--out", str(out), *TINY]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["n_candidates"] == 2 and len(results["kept"]) == 1
    assert sorted(results["train"] + results["eval"]) == results["kept"]
    split = "train" if results["train"] else "eval"
    files = results["files"][split]
    tasks = load_tasks(files["challenges"], files["solutions"])
    assert [t.id for t in tasks] == results["kept"] and tasks[0].test[0].output is not None
    assert all(max(len(g), len(g[0])) <= 5 for p in tasks[0].train for g in (p.input, p.output))


def test_the_kept_tasks_split_in_the_asked_proportion_whatever_their_order():
    from seal.experiments.arc_select import held_out

    ids = ["5582e5ca", "66e6c45b", "6e02f1e3", "e9afcf9a"]
    half = held_out(ids, 0.5)
    assert len(half) == 2 and held_out(ids[::-1], 0.5) == half
    assert len(held_out(ids, 0.1)) == 1 and len(held_out(ids, 0.9)) == 3  # one task on each side
    assert held_out(ids[:1], 0.5) == set()  # a single task is for training
    assert half <= held_out(ids + ["a1", "b2", "c3", "d4"], 0.75)  # the hash order, not a threshold


def test_constrained_self_edits_of_the_tiny_model_all_parse_in_a_run(tiny_dir, tmp_path):
    """Unconstrained, the tiny random model writes no valid configuration; constrained, every self-edit
    of the run parses and is trained on."""
    out = tmp_path / "run"
    args = ["arc", "eval", "--model", str(tiny_dir), "--k", "3", "--conditions", "self-edit", "--out", str(out),
            "--set", "data.ids=[59341089]", "--set", "self_edit.constrained=true", *TINY,
            "--set", "sampling.max_new_tokens=400", "--set", "ttt.max_epochs=2"]  # fmt: skip
    # after TINY, so they win: in the tiny tokenizer's short tokens a whole configuration is ~250 tokens
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    condition = json.loads((out / "results.json").read_text())["conditions"]["self-edit"]
    assert condition["pairs"] == 3 and condition["invalid"] == 0
