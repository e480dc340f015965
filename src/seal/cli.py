"""`seal ...`: one command per experiment, built from one table; every flag is a config field.

A command's flags are named config fields (`--k` is `sampling.k`), their help is the field's
description, and `--set key.sub=value` reaches every other field; the CLI only parses.
"""

from __future__ import annotations

import inspect
import logging
import sys
import types
import typing
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.markup import escape

from seal.cluster import ExecutorFailed
from seal.config import (
    ArcEvalConfig,
    ArcGenConfig,
    ArcLandscapeConfig,
    ArcSelectConfig,
    ArcTrainConfig,
    JudgeConfig,
    KnowledgeContinualConfig,
    KnowledgeCPTConfig,
    KnowledgeEvalConfig,
    KnowledgeTrainConfig,
    MemoryConfig,
    Section,
    load_config,
)
from seal.errors import DataError
from seal.grading import answer_grader_names, describe, grader_names
from seal.grading.judge import JudgeError
from seal.models import ModelLoadError
from seal.store import RunError

USER_ERRORS = (DataError, ModelLoadError, RunError, ValueError, FileNotFoundError)
MID_RUN_ERRORS = (JudgeError, ExecutorFailed)  # the endpoint stayed down, the workers kept dying: resumable

console = Console()


@dataclass(frozen=True)
class Command:
    """One experiment command: its config, its experiment class, and the flags that name config fields."""

    group: str
    name: str
    config: type[Section]
    experiment: str  # "module:Class", imported when the command runs
    help: str
    flags: dict[str, str] = field(default_factory=dict)  # flag (without --) -> dotted config field


SHARED = {"model": "model.name", "tracking": "tracking"}
POOL = {"executor": "executor.kind", "ray-address": "executor.address"}

COMMANDS = [
    Command(
        "knowledge", "eval", KnowledgeEvalConfig, "seal.experiments.knowledge_eval:KnowledgeEval",
        "The single-passage table: base, in-context, passage-only and self-edit conditions.",
        {**SHARED, "data": "data", "passages": "passages", "conditions": "conditions", "self-edits": "self_edits_file",
         "k": "sampling.k", "reward": "reward", **POOL},
    ),
    Command(
        "knowledge", "train", KnowledgeTrainConfig, "seal.experiments.knowledge_train:KnowledgeTrain",
        "ReST-EM: sample self-edits, reward them by adapting, fine-tune the policy on the best; evaluate each round.",
        {**SHARED, "train-data": "train_data", "train-passages": "train_passages", "eval-data": "eval_data",
         "eval-passages": "eval_passages", "rounds": "rounds", "k": "sampling.k", "reward": "reward", **POOL},
    ),
    Command(
        "knowledge", "continual", KnowledgeContinualConfig, "seal.experiments.knowledge_continual:KnowledgeContinual",
        "Self-edits merged one passage after another: the forgetting matrix, with and without a mitigation.",
        {**SHARED, "data": "data", "sequences": "sequences", "steps": "steps", "mitigations": "mitigations"},
    ),
    Command(
        "knowledge", "cpt", KnowledgeCPTConfig, "seal.experiments.knowledge_cpt:KnowledgeCPT",
        "Continued pretraining: one update on the self-edits of n passages, evaluated on all their questions.",
        {**SHARED, "data": "data", "passages": "passages", "conditions": "conditions", "self-edits": "self_edits_file",
         "method": "method"},
    ),
    Command(
        "arc", "eval", ArcEvalConfig, "seal.experiments.arc:ArcEval",
        "Self-edits on ARC tasks: parse, test-time train, predict with augmented voting; next to the baselines.",
        {**SHARED, "challenges": "data.challenges", "solutions": "data.solutions", "tasks": "data.tasks",
         "conditions": "conditions", "k": "k", **POOL},
    ),
    Command(
        "arc", "select", ArcSelectConfig, "seal.experiments.arc_select:ArcSelect",
        "The ARC tasks a model can learn: oracle test-time training on small tasks, the solved ones split.",
        {**SHARED, "candidates": "candidates", "tries": "tries", "max-side": "max_side", **POOL},
    ),
    Command(
        "arc", "landscape", ArcLandscapeConfig, "seal.experiments.arc_landscape:ArcLandscape",
        "How much the self-edit's choices matter: a grid of fixed configurations and random self-edits, per family.",
        {**SHARED, "challenges": "data.challenges", "solutions": "data.solutions", "tasks": "data.tasks",
         "tasks-per-family": "tasks_per_family", "tries": "tries", "random-plans": "random_plans", **POOL},
    ),
    Command(
        "arc", "train", ArcTrainConfig, "seal.experiments.arc:ArcTrain",
        "ReST-EM on ARC: keep the self-edits that solve their training task, fine-tune the policy on them.",
        {**SHARED, "train-tasks": "train_data.tasks", "eval-tasks": "eval_data.tasks", "rounds": "rounds", "k": "k",
         "eval-k": "eval_k", **POOL},
    ),
]  # fmt: skip

GROUPS = {
    "knowledge": "Knowledge incorporation (SQuAD or fictional passages).",
    "arc": "Few-shot learning on ARC tasks.",
}


def fail(message: str) -> typing.NoReturn:
    console.print(f"[bold red]error:[/] {escape(message)}")  # a message's brackets are text: pip install 'seal[x]'
    raise typer.Exit(2)


@contextmanager
def user_errors():
    """A user's mistake inside the block is one line and exit status 2."""
    try:
        yield
    except USER_ERRORS as err:
        fail(str(err))


def config_field(cls: type[BaseModel], dotted: str):
    """The pydantic field a dotted name reaches, e.g. `sampling.k` of KnowledgeEvalConfig."""
    *sections, name = dotted.split(".")
    for section in sections:
        cls = _model_class(cls.model_fields[section].annotation)
    return cls.model_fields[name]


def _model_class(annotation) -> type[BaseModel]:
    """The config class inside an annotation such as `JudgeConfig | None`."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    raise TypeError(f"{annotation} is not a config section")


def _flag_type(annotation) -> tuple[type, str]:
    """The type a flag parses to and a note for its help: a list is given comma-separated, a
    literal is one of its values."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _flag_type(args[0])
    if origin is list:
        (item,) = typing.get_args(annotation)
        choices = typing.get_args(item) if typing.get_origin(item) is Literal else ()
        return str, "comma-separated" + (f": {', '.join(choices)}" if choices else "")
    if origin is Literal:
        return str, " | ".join(map(str, args))
    return annotation, ""


def flag_help(cls: type[BaseModel], dotted: str) -> str:
    info = config_field(cls, dotted)
    _, note = _flag_type(info.annotation)
    text = info.description or dotted
    if dotted.split(".")[-1] == "reward":
        note = describe(grader_names(recorded_only=True))
    return f"{text} ({note})" if note else text


def resolve(cls: type[Section], config: Path | None, flags: dict[str, Any], overrides: list[str] | None) -> Section:
    """Config file, then the explicit flags, then --set overrides: the later wins."""
    pairs = [f"{k}={v}" for k, v in flags.items() if v is not None]
    try:
        return load_config(cls, config, pairs + list(overrides or []))
    except ValidationError as err:
        first = err.errors()[0]
        fail(f"config field {'.'.join(map(str, first['loc']))}: {first['msg']}")
    except (OSError, ValueError) as err:
        fail(str(err))


def run_experiment(spec: Command, cfg: Section, out: Path) -> None:
    """Run (or resume) the experiment in `out` and show its report; a user's mistake is one line."""
    module, name = spec.experiment.split(":")
    experiment = getattr(import_module(module), name)
    try:
        experiment(cfg, out, console).run()
    except MID_RUN_ERRORS as err:
        fail(f"{err}; what the run finished is kept in {out}: re-run the same command to resume")
    except USER_ERRORS as err:
        fail(str(err))
    show_report(out)


def _option(annotation, *decls: str, help: str):
    return Annotated[annotation, typer.Option(*decls, help=help)]


def build(spec: Command) -> Callable[..., None]:
    """The typer command of a table row: `--config`, one option per flag, `--out`, `--set`."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    params = [inspect.Parameter("config", keyword, default=None, annotation=_option(
        Optional[Path], "--config", "-c", help="YAML config (see configs/)"))]  # fmt: skip
    for flag, dotted in spec.flags.items():
        python_type, _ = _flag_type(config_field(spec.config, dotted).annotation)
        annotation = _option(Optional[python_type], f"--{flag}", help=flag_help(spec.config, dotted))
        params.append(inspect.Parameter(flag.replace("-", "_"), keyword, default=None, annotation=annotation))
    params += [
        inspect.Parameter("out", keyword, default=Path(f"runs/{spec.group}-{spec.name}"),
                          annotation=_option(Path, "--out", help="run directory; re-running resumes it")),
        inspect.Parameter("set_", keyword, default=None,
                          annotation=_option(Optional[list[str]], "--set", help="override any field: key.sub=value")),
    ]  # fmt: skip

    def command(config: Path | None, out: Path, set_: list[str] | None, **given: Any) -> None:
        flags = {}
        for flag, dotted in spec.flags.items():
            value = given[flag.replace("-", "_")]
            is_list = typing.get_origin(_strip_optional(config_field(spec.config, dotted).annotation)) is list
            flags[dotted] = f"[{value}]" if is_list and value else value
        run_experiment(spec, resolve(spec.config, config, flags, set_), out)

    command.__signature__ = inspect.Signature(params)
    command.__doc__ = spec.help
    return command


def _strip_optional(annotation):
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return annotation


app = typer.Typer(help="SEAL: self-adapting language models.", no_args_is_help=True, pretty_exceptions_enable=False)
for group, group_help in GROUPS.items():
    sub = typer.Typer(help=group_help, no_args_is_help=True)
    for spec in COMMANDS:
        if spec.group == group:
            sub.command(spec.name)(build(spec))
    app.add_typer(sub, name=group)


def show_report(run: Path) -> None:
    from seal.report import write_report

    report = write_report(run)
    console.print(report.read_text(), markup=False, highlight=False, soft_wrap=True)
    console.print(f"run directory: {run}; report: {report} (plots beside it)")


@app.command("report")
def report(run: Annotated[Path, typer.Argument(help="a finished run directory")]) -> None:
    """Tables and PNG plots of a run, and RUN/report/report.md embedding them."""
    from seal.report import ReportError

    try:
        show_report(run)
    except ReportError as err:
        fail(str(err))


@app.command("status")
def status(
    run: Annotated[Path, typer.Argument(help="a run directory: running, stopped or finished")],
    watch: Annotated[bool, typer.Option("--watch", help="refresh until the run stops (Ctrl-C to leave)")] = False,
    every: Annotated[float, typer.Option(help="seconds between refreshes with --watch")] = 5.0,
) -> None:
    """Where a run is, read from its store (safely while another command writes it): phase, round, items done,
    recent rate, time left in the phase, and the last evaluation's table."""
    from seal.status import show_status

    with user_errors():
        show_status(run, console, watch=watch, every=every)


JUDGED_HELP = (
    "judged answers: a SEAL eval result (e.g. reference-results/eval/base.json) "
    "or JSONL {question, gold, answer, verdict}"
)
FIT_WITH_HELP = "more judged files for --fit (their answers from FILE's held-out passages and questions left out)"
PASSAGES_HELP = "the passages a CPT result evaluated, in order (e.g. squad/synthetic/eval/base_val.json)"


@app.command("grade-check")
def grade_check(
    file: Annotated[Path, typer.Argument(help=JUDGED_HELP)],
    grader: Annotated[str, typer.Option(help=describe(answer_grader_names()))] = "verdict",
    part: Annotated[str, typer.Option(help="all | train | held-out (fixed split by passage)")] = "held-out",
    examples: Annotated[int, typer.Option(help="disagreements to show")] = 8,
    judge_url: Annotated[Optional[str], typer.Option(help="OpenAI-compatible base URL for --grader judge")] = None,
    judge_model: Annotated[Optional[str], typer.Option(help="model name for --grader judge")] = None,
    fit_to: Annotated[
        Optional[Path], typer.Option("--fit", help="refit the verdict model on the train part, save it here")
    ] = None,
    fit_with: Annotated[Optional[list[Path]], typer.Option(help=FIT_WITH_HELP)] = None,
    passages: Annotated[Optional[Path], typer.Option(help=PASSAGES_HELP)] = None,
) -> None:
    """Agreement of a grader with the verdicts in FILE: agreement, precision, recall, Cohen's kappa, confusion."""
    from seal.domains.knowledge import load_passages
    from seal.grading.check import grade_check as check
    from seal.report import print_grade_check

    judge = JudgeConfig(**{k: v for k, v in {"base_url": judge_url, "model": judge_model}.items() if v})
    try:
        evaluated = load_passages(passages) if passages is not None else None
        result = check(file, grader, part, judge=judge if grader == "judge" else None, passages=evaluated,
                       fit_to=fit_to, fit_with=fit_with or [])  # fmt: skip
    except JudgeError as err:
        fail(str(err))
    except USER_ERRORS as err:
        fail(str(err))
    if result.fitted_on is not None:
        console.print(f"fitted on {result.fitted_on} answers, saved to {fit_to}")
    print_grade_check(console, result, file.name, examples)


data_app = typer.Typer(
    help="Data sets by name (SQuAD, the SEAL release's self-edits and results, ARC-AGI) and the fictional benchmark.",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")


def _data_sets_help() -> str:
    from seal.datasets import DATASETS

    return "; ".join(f"{d.name}: {d.licence}" for d in DATASETS.values())


@data_app.command("fetch", help=(
    "Put data sets in the data directory ($SEAL_DATA, default ~/.cache/seal/data), each file checked against "
    "the sha256 of the manifest shipped with seal; a file already there is kept, so an interrupted fetch "
    f"resumes. Data sets and licences: {_data_sets_help()}."
))  # fmt: skip
def data_fetch(
    names: Annotated[list[str], typer.Argument(help="data sets to fetch (seal data list)")],
    from_: Annotated[
        Optional[Path], typer.Option("--from", help="a local mirror: DIR/squad/, DIR/reference-results/, DIR/arc/")
    ] = None,
    url: Annotated[
        Optional[str], typer.Option(help="download from this copy of the SEAL release (default: its pinned commit)")
    ] = None,
) -> None:
    from seal.datasets import fetch

    with user_errors():
        for name in names:
            done = fetch(name, mirror=from_, url=url, progress=lambda f: console.print(f"  {f.path}", highlight=False))
            console.print(f"{name}: {done.copied} files fetched, {done.kept} already there, in {done.directory}")


@data_app.command("list")
def data_list(name: Annotated[Optional[str], typer.Argument(help="a data set: list its files")] = None) -> None:
    """The data sets `seal data fetch` knows: what each holds, its licence, whether it is fetched; with a
    NAME, its files as a config names them (NAME:PATH)."""
    from seal.datasets import DATASETS, RELEASE, data_dir, dataset

    with user_errors():
        chosen = [dataset(name)] if name else list(DATASETS.values())
    for spec in chosen:
        present = sum((data_dir() / spec.folder / f.path).is_file() for f in spec.files.values())
        _say(f"{spec.name}: {spec.description}")
        _say(f"  licence: {spec.licence}; {len(spec.files)} files, {spec.size / 1e6:.1f} MB, {present} fetched")
        if name:
            for f in spec.files.values():
                _say(f"  {spec.name}:{f.path}  {f.size:,} bytes")
    _say(f"data directory: {data_dir()}; source: {RELEASE['repository']} at {RELEASE['commit'][:12]}")


@data_app.command("fictional")
def data_fictional(
    out: Annotated[Path, typer.Option(help="the passages file to write (a folder with --splits)")],
    passages: Annotated[Optional[int], typer.Option(help="passages to generate")] = None,
    seed: Annotated[Optional[int], typer.Option(help="the generator's seed: the same seed, the same file")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML of generator fields")] = None,
    exclude: Annotated[Optional[list[Path]], typer.Option(help="passage files whose words no name may use")] = None,
    splits: Annotated[bool, typer.Option("--splits", help="the shipped eval, val and train files, in order")] = False,
    style: Annotated[
        str,
        typer.Option(
            help="facts: short declarative sentences (data/fictional); prose: natural prose in varied genres "
            "(data/fictional-prose)"
        ),
    ] = "facts",
) -> None:
    """Passages about invented people, towns, organisations and inventions, with closed-book questions
    (the SEAL passage format, so every command reads them). Deterministic by seed; no two passages share
    an entity; --exclude keeps a new file entity-disjoint from earlier ones. --style prose writes
    encyclopedia entries, obituaries, news items, letters... with forward, reverse and two-hop questions."""
    from seal.domains import fictional, fictional_prose

    if style not in ("facts", "prose"):
        fail(f"--style is facts or prose, not {style!r}")
    generator = fictional_prose if style == "prose" else fictional
    given = {k: v for k, v in {"passages": passages, "seed": seed}.items() if v is not None}
    with user_errors():
        if splits:
            cfg = generator.make_config(config, **given)
            written = generator.make_split_files(out, cfg=cfg, exclude=exclude or [])
            for name, path in written.items():
                console.print(f"{name}: {path}")
            return
        made = generator.generate(config, exclude=exclude or [], **given)
        fictional.write(out, made)
        console.print(f"{len(made)} passages, {sum(len(p['questions']) for p in made)} questions written to {out}")


@data_app.command("arc")
def data_arc(
    out: Annotated[Path, typer.Option(help="the folder for {train,val,eval}_{challenges,solutions,rules}.json")],
    seed: Annotated[Optional[int], typer.Option(help=flag_help(ArcGenConfig, "seed"))] = None,
    train: Annotated[Optional[int], typer.Option(help=flag_help(ArcGenConfig, "train"))] = None,
    val: Annotated[Optional[int], typer.Option(help=flag_help(ArcGenConfig, "val"))] = None,
    eval_: Annotated[Optional[int], typer.Option("--eval", help=flag_help(ArcGenConfig, "eval"))] = None,
    max_side: Annotated[Optional[int], typer.Option(help=flag_help(ArcGenConfig, "max_side"))] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML of generator fields")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="override any field: key.sub=value")] = None,
) -> None:
    """ARC-format tasks of transformation families with parameters (flips, colour swaps, gravity, shifts,
    recolouring by size, filling, cropping, scaling, tiling, lines), in the Kaggle files every `seal arc`
    command reads. Deterministic by seed; splits disjoint by parameters, the held-out families in none of
    the training tasks."""
    from rich.table import Table

    from seal.domains.arc import generate

    flags = {"seed": seed, "train": train, "val": val, "eval": eval_, "max_side": max_side}
    cfg = resolve(ArcGenConfig, config, flags, set_)
    with user_errors():
        made = generate.generate(cfg)
        paths = generate.write(out, made)
        rows = generate.summary(made, cfg)
    table = Table(title=f"generated ARC tasks (seed {cfg.seed}) in {out}")
    for column in ["family", "rule", *(f"{s} tasks (values)" for s in generate.SPLITS), "training"]:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    for split, files in paths.items():
        console.print(f"{split}: {len(made[split])} tasks, {files['challenges']} and {files['solutions']}")


@app.command("export")
def export(
    run: Annotated[Path, typer.Argument(help="a run directory")],
    out: Annotated[Path, typer.Option(help="the model directory (or, with --self-edits, the JSON file) to write")],
    round_: Annotated[Optional[int], typer.Option("--round", help="policy round (default: the last)")] = None,
    self_edits: Annotated[bool, typer.Option("--self-edits", help="the run's self-edits, not its policy")] = False,
    condition: Annotated[Optional[str], typer.Option(help="with --self-edits on a knowledge eval run")] = None,
) -> None:
    """A ReST-EM run's policy merged into a plain model directory (--model DIR loads it), or a run's
    self-edits in the SEAL release's format (--self-edits FILE reads them as the 'file' condition)."""
    from seal.experiments.export import export_policy, export_self_edits

    with user_errors():
        if self_edits:
            n = export_self_edits(run, out, round_, condition)
            console.print(f"{n} passages with their self-edits written to {out}")
        else:
            export_policy(run, out, round_)
            console.print(f"policy written to {out}: load it with --model {out}")


memory_app = typer.Typer(
    help="Your own documents, each absorbed as its own adapter; questions answered by the adapter of the "
    "document they are about.",
    no_args_is_help=True,
)
app.add_typer(memory_app, name="memory")
LIBRARY_HELP = "the library's directory"


def _say(text: str) -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)


@memory_app.command("add")
def memory_add(
    directory: Annotated[Path, typer.Argument(help=LIBRARY_HELP + " (created on the first add)")],
    data: Annotated[Path, typer.Option(help="a JSON list of {title, context}, a .txt/.md file, or a folder of them")],
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config of a new library")] = None,
    model: Annotated[Optional[str], typer.Option(help=flag_help(MemoryConfig, "model.name"))] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="override any field: key.sub=value")] = None,
) -> None:
    """Absorb each document as its own adapter (trained on a self-edit the model writes); re-running an
    interrupted add finishes it. A library keeps the settings it was created with."""
    from seal.memory import Memory, read_documents

    given = config is not None or model is not None or bool(set_)
    cfg = resolve(MemoryConfig, config, {"model.name": model}, set_) if given else None
    with user_errors():
        documents = read_documents(data)
        entries = Memory(directory, cfg, create=True, console=console).add(documents)
    for entry in entries:
        _say(f"{entry.id}  {entry.title}  ({entry.self_edit_lines} self-edit lines)")


@memory_app.command("ask")
def memory_ask(
    directory: Annotated[Path, typer.Argument(help=LIBRARY_HELP)],
    question: Annotated[str, typer.Argument(help="a question about the library's documents")],
) -> None:
    """The answer from the adapter(s) of the document(s) the question is routed to, and those documents."""
    from seal.memory import Memory

    with user_errors():
        answer = Memory(directory, console=console).ask(question)
    _say(answer.text)
    for s in answer.sources:
        _say(f"source: {s.title} (entry {s.id}, similarity {s.similarity:.2f}, weight {s.weight:.2f})")


@memory_app.command("list")
def memory_list(directory: Annotated[Path, typer.Argument(help=LIBRARY_HELP)]) -> None:
    """Every entry: id, title, self-edit lines, size, when added, and whether its files are whole."""
    from seal.memory import Memory

    with user_errors():
        memory = Memory(directory, console=console)
        entries, problems = memory.entries(), memory.problems()
    for e in entries:
        _say(f"{e.id}  {e.title}  {e.self_edit_lines} lines  {e.bytes:,} bytes  {e.added}  {problems[e.id] or 'ok'}")
    _say(f"{len(entries)} entries in {directory}")


@memory_app.command("remove")
def memory_remove(
    directory: Annotated[Path, typer.Argument(help=LIBRARY_HELP)],
    entry: Annotated[str, typer.Argument(help="the entry's id (or its first characters)")],
) -> None:
    """Take an entry out of the library and delete its files."""
    from seal.memory import Memory

    with user_errors():
        removed = Memory(directory, console=console).remove(entry)
    _say(f"removed {removed.id}  {removed.title}")


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    app()


if __name__ == "__main__":
    main()
