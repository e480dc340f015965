"""Generated ARC tasks (`seal data arc`): deterministic files, solutions that are their family's rule, splits
disjoint by parameters, the ARC format every `seal arc` command reads; and the self-edit prompt's options."""

import json
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from seal.cli import app
from seal.config import ArcDataConfig, ArcGenConfig
from seal.domains.arc import generate
from seal.domains.arc.grammar import arc_self_edit_schema
from seal.domains.arc.grids import load_tasks
from seal.domains.arc.selfedit import self_edit_prompt
from seal.experiments.arc_steps import load_arc
from test_arc import TINY

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "data" / "arc-gen"
runner = CliRunner()
SMALL_SPLITS = ["--train", "12", "--val", "10", "--eval", "14"]


def written(out: Path, *args: str) -> dict[str, bytes]:
    result = runner.invoke(app, ["data", "arc", "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_the_same_seed_writes_the_same_files_and_another_seed_other_ones(tmp_path):
    first = written(tmp_path / "a", "--seed", "3", *SMALL_SPLITS)
    assert set(first) == {f"{s}_{k}.json" for s in generate.SPLITS for k in ("challenges", "solutions", "rules")}
    assert written(tmp_path / "b", "--seed", "3", *SMALL_SPLITS) == first
    assert written(tmp_path / "c", "--seed", "4", *SMALL_SPLITS) != first


def split_tasks(folder: Path, split: str):
    tasks = load_tasks(folder / f"{split}_challenges.json", folder / f"{split}_solutions.json")
    rules = json.loads((folder / f"{split}_rules.json").read_text())
    return [(t, rules[t.id]["family"], tuple(rules[t.id]["params"])) for t in tasks]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("arc-gen")
    written(out, "--seed", "0", "--train", "30", "--val", "20", "--eval", "40")
    return out


def test_every_output_is_its_familys_rule_applied_to_its_input(folder):
    for split in generate.SPLITS:
        for task, family, params in split_tasks(folder, split):
            assert generate.family_of(task.id) == family
            rule = generate.FAMILIES[family].rule
            for pair in task.train + task.test:
                assert pair.output is not None and pair.output == rule(pair.input, params) != pair.input, task.id
            assert len({p.input for p in task.train + task.test}) == len(task.train) + 1  # no input repeated


def test_splits_are_disjoint_by_parameters_and_the_held_out_families_have_no_training_task(folder):
    cfg = ArcGenConfig()
    rules = {s: {(f, p) for _, f, p in split_tasks(folder, s)} for s in generate.SPLITS}
    for a, b in (("train", "val"), ("train", "eval"), ("val", "eval")):
        assert not rules[a] & rules[b], (a, b)
    trained = {f for f, _ in rules["train"]}
    assert trained == set(generate.FAMILIES) - set(cfg.held_out)
    assert {f for f, _ in rules["eval"]} == {f for f, _ in rules["val"]} == set(generate.FAMILIES)


def test_the_tasks_are_small_arc_tasks_with_three_or_four_demonstrations_and_one_test_input(folder):
    cfg = ArcGenConfig()
    for split in generate.SPLITS:
        data = ArcDataConfig(challenges=str(folder / f"{split}_challenges.json"),
                             solutions=str(folder / f"{split}_solutions.json"))  # fmt: skip
        for task in load_arc(data):  # what every `seal arc` command reads, with every grid checked
            assert 3 <= len(task.train) <= 4 and len(task.test) == 1
            grids = [g for p in task.train + task.test for g in (p.input, p.output)]
            assert all(len(g) <= cfg.max_side and len(g[0]) <= cfg.max_side for g in grids), task.id


def test_the_rules_do_what_their_families_say():
    g = ((0, 3, 0), (2, 0, 0), (0, 0, 0))
    assert generate.gravity(g, ("down",)) == ((0, 0, 0), (0, 0, 0), (2, 3, 0))
    assert generate.gravity(g, ("right",)) == ((0, 0, 3), (0, 0, 2), (0, 0, 0))
    assert generate.gravity(g, ("up",)) == ((2, 3, 0), (0, 0, 0), (0, 0, 0))
    assert generate.gravity(g, ("left",)) == ((3, 0, 0), (2, 0, 0), (0, 0, 0))
    assert generate.shift(g, ("down", 1)) == ((0, 0, 0), (0, 3, 0), (2, 0, 0))
    assert generate.colour_swap(g, (2, 3)) == ((0, 2, 0), (3, 0, 0), (0, 0, 0))
    box = ((5, 5, 5, 0), (5, 0, 5, 0), (5, 5, 5, 0), (0, 0, 0, 0))
    assert generate.fill_enclosed(box, (4,)) == ((5, 5, 5, 0), (5, 4, 5, 0), (5, 5, 5, 0), (0, 0, 0, 0))
    objects = ((1, 0, 1), (0, 0, 1), (1, 1, 0))
    assert generate.recolour_by_size(objects, (2, 7)) == ((1, 0, 7), (0, 0, 7), (7, 7, 0))
    assert generate.crop(((0, 0, 0), (0, 6, 2), (0, 1, 6)), (6,)) == ((6, 2), (1, 6))
    assert generate.scale(((1, 2),), (2, 1)) == ((1, 2), (1, 2))
    assert generate.tile(((1, 2),), (2, 2, "mirror")) == ((1, 2, 2, 1), (1, 2, 2, 1))
    assert generate.lines(((0, 0, 0), (0, 4, 0), (0, 0, 0)), ("cross",)) == ((0, 4, 0), (4, 4, 4), (0, 4, 0))
    assert generate.geometry(((1, 2),), ("transpose",)) == ((1,), (2,))


def test_the_shipped_set_is_what_its_readme_command_writes(tmp_path):
    readme = (SHIPPED / "README.md").read_text()
    command = next(line.strip() for line in readme.splitlines() if "seal data arc" in line)
    args = command.split("seal ", 1)[1].split()
    args[args.index("--out") + 1] = str(tmp_path / "again")
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    for path in sorted(SHIPPED.glob("*.json")):
        assert (tmp_path / "again" / path.name).read_bytes() == path.read_bytes(), path.name


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "families=[geometry, spirals]"], "unknown task family 'spirals'"),
        (["--set", "held_out=[gravity]", "--set", "families=[geometry]"], "held_out family 'gravity'"),
        (["--set", "min_side=7"], "min_side 7 is above max_side 6"),
        (["--max-side", "4"], "family 'crop' needs grids of 5 cells a side"),
    ],
)
def test_a_bad_generator_setting_is_one_clear_error(tmp_path, extra, message):
    result = runner.invoke(app, ["data", "arc", "--out", str(tmp_path / "x"), *extra])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_the_self_edit_prompt_names_every_option_of_the_schema_and_its_bounds(folder):
    task = split_tasks(folder, "val")[0][0]
    schema = arc_self_edit_schema(max_lr=0.005, max_epochs=7)
    text = self_edit_prompt(task, "compact", max_lr=0.005, max_epochs=7)
    for section, part in schema["properties"].items():
        assert f'"{section}"' in text
        for option in part["properties"]:
            assert f'"{option}":' in text or f'"{option}",' in text, option
    training = schema["properties"]["training"]["properties"]
    for strategy in training["strategy"]["enum"]:
        assert f'"{strategy}":' in text, strategy  # each strategy named with what it does
    assert "at most 0.005" in text and "from 1 to 7" in text


def test_the_landscape_scores_each_configuration_per_family_next_to_random_self_edits(tiny_dir, tmp_path, monkeypatch):
    """Two generated tasks of two families, two fixed configurations and a random self-edit each, on the tiny
    model. Its predictions solve nothing, so the scaling task is made to count as solved whatever the plan:
    its family's column must be 100% in every row, the tile family's 0%, and neither has headroom."""
    from seal.domains.arc import ttt

    real = ttt.solved
    monkeypatch.setattr(ttt, "solved", lambda task, attempts: task.id.startswith("scale.") or real(task, attempts))
    out = tmp_path / "landscape"
    args = ["arc", "landscape", "--model", str(tiny_dir), "--random-plans", "1", "--out", str(out),
            "--set", "data.ids=[scale.2-2.val017, tile.3-1-mirror.val048]", "--set", "grid.strategies=[output]",
            "--set", "grid.augmentations=[[], [basic]]", "--set", "grid.lrs=[1e-3]", "--set", "grid.epochs=[1]",
            "--set", "ttt.max_epochs=2", *TINY]  # fmt: skip
    monkeypatch.chdir(ROOT)
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["tasks_per_family"] == {"scale": 1, "tile": 1}
    assert [c["label"] for c in results["configs"]] == ["none, output, lr 0.001, 1 ep", "basic, output, lr 0.001, 1 ep"]
    for row in [*results["configs"], results["random"]]:
        assert row["pairs"] == 2 and row["per_family"] == {"scale": 1.0, "tile": 0.0}
    assert all(c["invalid"] == 0 for c in results["configs"])  # a fixed plan always parses
    assert {f: b["headroom"] for f, b in results["best"].items()} == {"scale": 0.0, "tile": 0.0}
    assert results["baseline"] == "random" and results["oracle"]["name"] == "grid0"
    report = (out / "report" / "report.md").read_text()
    assert "| basic, output, lr 0.001, 1 ep |" in report and "random valid self-edits" in report

    def no_more_work(*args, **kwargs):
        raise AssertionError("a finished landscape must not redo work")

    monkeypatch.setattr("seal.experiments.arc_steps.adapt_batch", no_more_work)
    assert runner.invoke(app, args).exit_code == 0


def test_a_landscape_grid_outside_the_self_edit_bounds_is_one_clear_error(tmp_path):
    result = runner.invoke(app, ["arc", "landscape", "--set", "grid.lrs=[0.5]", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "grid.lrs: 0.5 is not in (0, ttt.max_lr = 0.01]" in " ".join(result.output.split())


def test_the_documented_commands_for_generated_tasks_and_the_landscape_run(tiny_dir, tmp_path, monkeypatch):
    from test_cli import SMALL
    from test_docs import code_blocks

    lines = [shlex.split(line, comments=True) for b in code_blocks(ROOT / "docs" / "arc.md", "bash") for line in
             b.strip().splitlines()]  # fmt: skip
    generate_line = next(args for args in lines if args[3:5] == ["data", "arc"])
    landscape_line = next(args for args in lines if args[3:5] == ["arc", "landscape"])
    monkeypatch.chdir(ROOT)
    folder = tmp_path / "arc-gen"
    generate_line[generate_line.index("--out") + 1] = str(folder)
    assert runner.invoke(app, [*generate_line[3:], *SMALL_SPLITS]).exit_code == 0
    landscape_line[landscape_line.index("--out") + 1] = str(tmp_path / "landscape")
    small = [
        "--model",
        str(tiny_dir),
        *SMALL["arc landscape"],
        "--set",
        "model.dtype=float32",
        "--challenges",
        str(folder / "val_challenges.json"),
        "--solutions",
        str(folder / "val_solutions.json"),
    ]
    result = runner.invoke(app, [*landscape_line[3:], *small])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "landscape" / "results.json").read_text())["n_tasks"] == 1
