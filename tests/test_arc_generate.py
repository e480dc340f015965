"""Generated ARC tasks (`seal data arc`): deterministic files, solutions that are their family's rule, splits
disjoint by parameters, the ARC format every `seal arc` command reads; and the self-edit prompt's options."""

import json
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

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "data" / "arc-gen"
runner = CliRunner()
SMALL = ["--train", "12", "--val", "10", "--eval", "14"]


def written(out: Path, *args: str) -> dict[str, bytes]:
    result = runner.invoke(app, ["data", "arc", "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_the_same_seed_writes_the_same_files_and_another_seed_other_ones(tmp_path):
    first = written(tmp_path / "a", "--seed", "3", *SMALL)
    assert set(first) == {f"{s}_{k}.json" for s in generate.SPLITS for k in ("challenges", "solutions", "rules")}
    assert written(tmp_path / "b", "--seed", "3", *SMALL) == first
    assert written(tmp_path / "c", "--seed", "4", *SMALL) != first


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
