"""`seal ...`: one command per experiment; every option is a config field, `--set key=value` reaches the rest."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from pydantic import ValidationError
from rich.console import Console

from seal.cluster import ExecutorFailed
from seal.config import (
    ArcEvalConfig,
    ArcTrainConfig,
    KnowledgeContinualConfig,
    KnowledgeCPTConfig,
    KnowledgeEvalConfig,
    KnowledgeTrainConfig,
    load_config,
)
from seal.domains.knowledge import DataError
from seal.grading.judge import JudgeError
from seal.models import ModelLoadError
from seal.store import RunConfigMismatch

app = typer.Typer(help="SEAL: self-adapting language models.", no_args_is_help=True, pretty_exceptions_enable=False)
knowledge_app = typer.Typer(help="Knowledge incorporation (SQuAD passages).", no_args_is_help=True)
app.add_typer(knowledge_app, name="knowledge")
arc_app = typer.Typer(help="Few-shot learning on ARC tasks.", no_args_is_help=True)
app.add_typer(arc_app, name="arc")
console = Console()

USER_ERRORS = (DataError, ModelLoadError, RunConfigMismatch, ValueError, FileNotFoundError)

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config (see configs/)")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="override any field: key.sub=value")]
ModelOpt = Annotated[Optional[str], typer.Option(help="'embedded', a hub id or a local directory")]
ExecutorOpt = Annotated[Optional[str], typer.Option("--executor", help="local (in-process) | processes (worker processes here) | ray (a pool of actors)")]
RayAddressOpt = Annotated[Optional[str], typer.Option("--ray-address", help="Ray cluster address (auto, HOST:6379)")]
OutOpt = Annotated[Path, typer.Option(help="run directory; re-running resumes it")]
PassagesFileOpt = Annotated[Optional[str], typer.Option(help="passages file (SEAL format)")]
SelfEditsOpt = Annotated[Optional[str], typer.Option("--self-edits", help="file with completions for 'file'")]


def fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(2)


def resolve(cls, config: Path | None, flags: dict[str, object], overrides: list[str] | None):
    """Config file, then the explicit flags, then --set overrides: the later wins."""
    pairs = [f"{k}={v}" for k, v in flags.items() if v is not None]
    try:
        return load_config(cls, config, pairs + list(overrides or []))
    except ValidationError as err:
        first = err.errors()[0]
        fail(f"config field {'.'.join(map(str, first['loc']))}: {first['msg']}")
    except (OSError, ValueError) as err:
        fail(str(err))


def as_list(value: str | None) -> str | None:
    """A comma-separated option as the YAML list a config field takes."""
    return f"[{value}]" if value else None


def common_flags(model: str | None, executor: str | None = None, ray_address: str | None = None) -> dict[str, object]:
    return {"model.name": model, "executor.kind": executor, "executor.address": ray_address}


def launch(cls, experiment, config: Path | None, flags: dict[str, object], overrides: list[str] | None, out: Path) -> None:
    """Resolve the config, run (or resume) the experiment in `out`, and show its report."""
    cfg = resolve(cls, config, flags, overrides)
    try:
        experiment(cfg, out, console).run()
    except (JudgeError, ExecutorFailed) as err:  # mid-run: the endpoint stayed down, the workers kept dying
        fail(f"{err}; what the run finished is kept in {out}: re-run the same command to resume")
    except USER_ERRORS as err:
        fail(str(err))
    show_report(out)


@knowledge_app.command("eval")
def knowledge_eval(
    config: ConfigOpt = None,
    model: ModelOpt = None,
    data: PassagesFileOpt = None,
    passages: Annotated[Optional[int], typer.Option(help="number of passages (paper subset order)")] = None,
    conditions: Annotated[Optional[str], typer.Option(help="comma-separated, e.g. base,in-context,passage,implications,file")] = None,
    self_edits: SelfEditsOpt = None,
    k: Annotated[Optional[int], typer.Option(help="self-edits per passage")] = None,
    reward: Annotated[Optional[str], typer.Option(help="em | f1 | loglik | judge")] = None,
    out: OutOpt = Path("runs/knowledge-eval"),
    executor: ExecutorOpt = None,
    ray_address: RayAddressOpt = None,
    set_: SetOpt = None,
) -> None:
    """The single-passage table: base, in-context, passage-only and self-edit conditions."""
    from seal.experiments.knowledge_eval import KnowledgeEval

    flags = {
        **common_flags(model, executor, ray_address),
        "data": data,
        "passages": passages,
        "conditions": as_list(conditions),
        "self_edits_file": self_edits,
        "sampling.k": k,
        "reward": reward,
    }
    launch(KnowledgeEvalConfig, KnowledgeEval, config, flags, set_, out)


@knowledge_app.command("train")
def knowledge_train(
    config: ConfigOpt = None,
    model: ModelOpt = None,
    train_data: Annotated[Optional[str], typer.Option(help="training passages (SEAL format)")] = None,
    train_passages: Annotated[Optional[int], typer.Option(help="number of training passages")] = None,
    eval_data: Annotated[Optional[str], typer.Option(help="held-out passages (SEAL format)")] = None,
    eval_passages: Annotated[Optional[int], typer.Option(help="number of held-out passages (paper subset order)")] = None,
    rounds: Annotated[Optional[int], typer.Option(help="ReST-EM rounds")] = None,
    k: Annotated[Optional[int], typer.Option(help="self-edits per training passage")] = None,
    reward: Annotated[Optional[str], typer.Option(help="verdict | em | f1 | loglik | judge")] = None,
    out: OutOpt = Path("runs/knowledge-train"),
    executor: ExecutorOpt = None,
    ray_address: RayAddressOpt = None,
    set_: SetOpt = None,
) -> None:
    """ReST-EM: sample self-edits, reward them by adapting, fine-tune the policy on the best; evaluate each round."""
    from seal.experiments.knowledge_train import KnowledgeTrain

    flags = {
        **common_flags(model, executor, ray_address),
        "train_data": train_data,
        "train_passages": train_passages,
        "eval_data": eval_data,
        "eval_passages": eval_passages,
        "rounds": rounds,
        "sampling.k": k,
        "reward": reward,
    }
    launch(KnowledgeTrainConfig, KnowledgeTrain, config, flags, set_, out)


@knowledge_app.command("continual")
def knowledge_continual(
    config: ConfigOpt = None,
    model: ModelOpt = None,
    data: PassagesFileOpt = None,
    sequences: Annotated[Optional[int], typer.Option(help="independent sequences, averaged")] = None,
    steps: Annotated[Optional[int], typer.Option(help="passages per sequence")] = None,
    mitigations: Annotated[Optional[str], typer.Option(help="comma-separated: none,replay")] = None,
    out: OutOpt = Path("runs/knowledge-continual"),
    set_: SetOpt = None,
) -> None:
    """Self-edits merged one passage after another: the forgetting matrix, with and without a mitigation."""
    from seal.experiments.knowledge_continual import KnowledgeContinual

    flags = {
        **common_flags(model),
        "data": data,
        "sequences": sequences,
        "steps": steps,
        "mitigations": as_list(mitigations),
    }
    launch(KnowledgeContinualConfig, KnowledgeContinual, config, flags, set_, out)


@knowledge_app.command("cpt")
def knowledge_cpt(
    config: ConfigOpt = None,
    model: ModelOpt = None,
    data: PassagesFileOpt = None,
    passages: Annotated[Optional[int], typer.Option(help="passages absorbed together (paper: 200, 2067)")] = None,
    conditions: Annotated[Optional[str], typer.Option(help="comma-separated, e.g. base,passage,implications,file")] = None,
    self_edits: SelfEditsOpt = None,
    method: Annotated[Optional[str], typer.Option(help="lora | full")] = None,
    out: OutOpt = Path("runs/knowledge-cpt"),
    set_: SetOpt = None,
) -> None:
    """Continued pretraining: one update on the self-edits of n passages, evaluated on all their questions."""
    from seal.experiments.knowledge_cpt import KnowledgeCPT

    flags = {
        **common_flags(model),
        "data": data,
        "passages": passages,
        "conditions": as_list(conditions),
        "self_edits_file": self_edits,
        "method": method,
    }
    launch(KnowledgeCPTConfig, KnowledgeCPT, config, flags, set_, out)


@arc_app.command("eval")
def arc_eval(
    config: ConfigOpt = None,
    model: ModelOpt = None,
    challenges: Annotated[Optional[str], typer.Option(help="ARC challenges file (Kaggle format)")] = None,
    solutions: Annotated[Optional[str], typer.Option(help="its solutions file")] = None,
    tasks: Annotated[Optional[int], typer.Option(help="first N tasks")] = None,
    conditions: Annotated[Optional[str], typer.Option(help="comma-separated: in-context,self-edit,oracle")] = None,
    k: Annotated[Optional[int], typer.Option(help="self-edits per task")] = None,
    out: OutOpt = Path("runs/arc-eval"),
    executor: ExecutorOpt = None,
    ray_address: RayAddressOpt = None,
    set_: SetOpt = None,
) -> None:
    """Self-edits on ARC tasks: parse, test-time train, predict with augmented voting; next to the baselines."""
    from seal.experiments.arc import ArcEval

    flags = {
        **common_flags(model, executor, ray_address),
        "data.challenges": challenges,
        "data.solutions": solutions,
        "data.tasks": tasks,
        "conditions": as_list(conditions),
        "k": k,
    }
    launch(ArcEvalConfig, ArcEval, config, flags, set_, out)


@arc_app.command("train")
def arc_train(
    config: ConfigOpt = None,
    model: ModelOpt = None,
    train_tasks: Annotated[Optional[int], typer.Option(help="first N training tasks")] = None,
    eval_tasks: Annotated[Optional[int], typer.Option(help="first N held-out tasks")] = None,
    rounds: Annotated[Optional[int], typer.Option(help="RL rounds")] = None,
    k: Annotated[Optional[int], typer.Option(help="self-edits per training task")] = None,
    eval_k: Annotated[Optional[int], typer.Option(help="self-edits per held-out task")] = None,
    out: OutOpt = Path("runs/arc-train"),
    executor: ExecutorOpt = None,
    ray_address: RayAddressOpt = None,
    set_: SetOpt = None,
) -> None:
    """ReST-EM on ARC: keep the self-edits that solve their training task, fine-tune the policy on them."""
    from seal.experiments.arc import ArcTrain

    flags = {
        **common_flags(model, executor, ray_address),
        "train_data.tasks": train_tasks,
        "eval_data.tasks": eval_tasks,
        "rounds": rounds,
        "k": k,
        "eval_k": eval_k,
    }
    launch(ArcTrainConfig, ArcTrain, config, flags, set_, out)


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


@app.command("grade-check")
def grade_check(
    file: Annotated[Path, typer.Argument(help="judged answers: a SEAL eval result (e.g. reference-results/eval/base.json) or JSONL {question, gold, answer, verdict}")],
    grader: Annotated[str, typer.Option(help="verdict | contains | em | f1 | judge")] = "verdict",
    part: Annotated[str, typer.Option(help="all | train | held-out (fixed split by passage)")] = "held-out",
    examples: Annotated[int, typer.Option(help="disagreements to show")] = 8,
    judge_url: Annotated[Optional[str], typer.Option(help="OpenAI-compatible base URL for --grader judge")] = None,
    judge_model: Annotated[Optional[str], typer.Option(help="model name for --grader judge")] = None,
    fit_to: Annotated[Optional[Path], typer.Option("--fit", help="refit the verdict model on the train part, save it here")] = None,
    fit_with: Annotated[Optional[list[Path]], typer.Option(help="more judged files for --fit (their answers from FILE's held-out passages and questions left out)")] = None,
    passages: Annotated[Optional[Path], typer.Option(help="the passages a CPT result evaluated, in order (e.g. squad/synthetic/eval/base_val.json)")] = None,
) -> None:
    """Agreement of a grader with the verdicts in FILE: agreement, precision, recall, Cohen's kappa, confusion."""
    from rich.table import Table

    from seal.config import JudgeConfig
    from seal.domains.knowledge import load_passages
    from seal.grading import LLMJudge, exact_match, normalize, token_f1
    from seal.grading.check import agreement, calibration_rows, load_judged, split
    from seal.grading.verdict import VerdictModel, fit

    if fit_with and fit_to is None:
        fail("--fit-with needs --fit")
    try:
        evaluated = load_passages(passages) if passages is not None else None
        rows = load_judged(file, evaluated)
        more = [row for extra in fit_with or [] for row in load_judged(extra, evaluated)]
    except USER_ERRORS as err:
        fail(str(err))
    train, held_out = split(rows)
    chosen = {"all": rows, "train": train, "held-out": held_out}.get(part)
    if chosen is None:
        fail(f"--part must be all, train or held-out, not {part!r}")
    model = VerdictModel.load()
    if fit_to is not None:
        fitted_on = calibration_rows(train, held_out, more)
        model = fit(fitted_on)
        model.save(fit_to)
        console.print(f"fitted on {len(fitted_on)} answers ({len(train)} from {file.name}), saved to {fit_to}")
    graders = {
        "verdict": lambda q, g, a: model.probability(q, g, a) >= model.threshold,
        "contains": lambda q, g, a: bool(normalize(g)) and normalize(g) in normalize(a),
        "em": lambda q, g, a: exact_match(g, a) == 1.0,
        "f1": lambda q, g, a: token_f1(g, a) >= 0.5,
    }
    if grader == "judge":
        judge_cfg = JudgeConfig(**{k: v for k, v in {"base_url": judge_url, "model": judge_model}.items() if v})
        judge = LLMJudge(judge_cfg)
        graders["judge"] = lambda q, g, a: judge.verdict(q, g, a) == 1.0
    if grader not in graders:
        fail(f"unknown grader {grader!r}; choose from verdict, contains, em, f1, judge")
    try:
        result, disagreements = agreement(chosen, graders[grader])
    except JudgeError as err:
        fail(str(err))
    table = Table(title=f"{grader} vs {file.name} ({part}: {result.n} answers)")
    for column in ("agreement", "precision", "recall", "kappa"):
        table.add_column(column, justify="right")
    table.add_row(*(f"{getattr(result, c):.3f}" for c in ("accuracy", "precision", "recall", "kappa")))
    console.print(table)
    confusion = Table(title="confusion (rows: reference verdict)")
    confusion.add_column("")
    confusion.add_column("grader yes", justify="right")
    confusion.add_column("grader no", justify="right")
    confusion.add_row("reference yes", str(result.tp), str(result.fn))
    confusion.add_row("reference no", str(result.fp), str(result.tn))
    console.print(confusion)
    for row, said in disagreements[:examples]:
        answer = row.answer.strip().replace("\n", " / ")[:140]
        console.print(f"[dim]grader {'yes' if said else 'no'}, reference {'yes' if row.verdict else 'no'}:[/] "
                      f"gold={row.gold!r} answer={answer!r}")


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    app()


if __name__ == "__main__":
    main()
