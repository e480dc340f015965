"""`seal ...`: one command per experiment; every option is a config field, `--set key=value` reaches the rest."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from pydantic import ValidationError
from rich.console import Console

from seal.config import KnowledgeEvalConfig, load_config
from seal.domains.knowledge import DataError
from seal.models import ModelLoadError
from seal.store import RunConfigMismatch

app = typer.Typer(help="SEAL: self-adapting language models.", no_args_is_help=True, pretty_exceptions_enable=False)
knowledge_app = typer.Typer(help="Knowledge incorporation (SQuAD passages).", no_args_is_help=True)
app.add_typer(knowledge_app, name="knowledge")
console = Console()

USER_ERRORS = (DataError, ModelLoadError, RunConfigMismatch, ValueError, FileNotFoundError)

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config (see configs/)")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="override any field: key.sub=value")]


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


@knowledge_app.command("eval")
def knowledge_eval(
    config: ConfigOpt = None,
    model: Annotated[Optional[str], typer.Option(help="'embedded', a hub id or a local directory")] = None,
    data: Annotated[Optional[str], typer.Option(help="passages file (SEAL format)")] = None,
    passages: Annotated[Optional[int], typer.Option(help="number of passages (paper subset order)")] = None,
    conditions: Annotated[Optional[str], typer.Option(help="comma-separated, e.g. base,in-context,passage,implications,file")] = None,
    self_edits: Annotated[Optional[str], typer.Option("--self-edits", help="file with completions for 'file'")] = None,
    k: Annotated[Optional[int], typer.Option(help="self-edits per passage")] = None,
    reward: Annotated[Optional[str], typer.Option(help="em | f1 | loglik | judge")] = None,
    out: Annotated[Path, typer.Option(help="run directory; re-running resumes it")] = Path("runs/knowledge-eval"),
    set_: SetOpt = None,
) -> None:
    """The single-passage table: base, in-context, passage-only and self-edit conditions."""
    from seal.experiments.knowledge_eval import KnowledgeEval, results_table

    flags = {
        "model.name": model,
        "data": data,
        "passages": passages,
        "conditions": f"[{conditions}]" if conditions else None,
        "self_edits_file": self_edits,
        "sampling.k": k,
        "reward": reward,
    }
    cfg = resolve(KnowledgeEvalConfig, config, flags, set_)
    try:
        results = KnowledgeEval(cfg, out, console).run()
    except USER_ERRORS as err:
        fail(str(err))
    console.print(results_table(results))
    console.print(f"run directory: {out} (results.json, records.jsonl, config.yaml)")


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    app()


if __name__ == "__main__":
    main()
