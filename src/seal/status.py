"""`seal status RUN`: where a run is, read from its store while another process writes it.

Experiments record what each phase plans as it starts (`begin_phase`: a `progress` record listing the keys
the phase writes, the done ones included) and each evaluation's table (`record_evaluation`); with the time
the store gives every record, that tells the phase, how far it is, its recent rate and the time it has left.
The store is opened read-only (no lock, no write), so this reads a running run, a finished one, or one from
before progress was recorded (with less to say).
"""

from __future__ import annotations

import math
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from seal.config import parse_yaml
from seal.report import markdown_table
from seal.stats import format_ci
from seal.store import CONFIG_FILE, LOCK_FILE, RESULTS_FILE, RunStore

PROGRESS = "progress"
TRAINING = "training"  # a training phase's tokens trained so far, by its label
EVALUATIONS = "evaluations"
RATE_WINDOW_S = 600.0  # the recent rate: items finished in the last 10 minutes of the phase
DONE = {  # what a phase's items are, by its stage
    "answer": "contexts answered",
    "sample": "self-edits written",
    "adapt": "self-edits adapted and scored",
    "fine-tune": "policy fine-tunes",
}


def begin_phase(store: RunStore, label: str, stage: str, kind: str, keys: list[str]) -> None:
    """Record that a phase starts now (in this process): what it writes, so that `seal status` can tell how
    far it is. Written again by a resumed run, which restarts the phase's clock.

    Args:
        store: the run's store.
        label: the phase as its progress bar names it; the record's key.
        stage: answer, sample, adapt or fine-tune (`DONE`).
        kind: the record kind whose records mark the phase's items done.
        keys: every item's key, the ones done already included.
    """
    store.put(PROGRESS, label, {"stage": stage, "kind": kind, "keys": list(keys)})


def record_training(store: RunStore, label: str, trained: int, total: int) -> None:
    """How many of a training phase's `total` tokens are trained, now: it moves while units of work train,
    before any of them writes its records (a unit of work can train for many minutes)."""
    store.put(TRAINING, label, {"trained": trained, "total": total})


def record_evaluation(store: RunStore, name: str, table: Callable[[], dict[str, dict[str, dict]]]) -> None:
    """An evaluation's table, filed once under ("evaluations", name) (`e1`: policy 1's evaluation; computed
    only when it is not recorded yet): per condition, per metric, its mean with a 95% interval over contexts
    (`seal.stats.bootstrap_ci`). A NaN (nothing to average) is recorded as None."""
    if store.get(EVALUATIONS, name) is None:
        store.put(EVALUATIONS, name, _without_nan(table()))


def _without_nan(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nan(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def phases(store: RunStore) -> dict[str, dict]:
    """Every recorded phase by its label: its `begin_phase` record with `label` and `started` (when it
    last began, in seconds since the epoch)."""
    times = store.write_times(PROGRESS)
    return {
        label: record | {"label": label, "started": times.get(label, (0.0, 0))[0]}
        for label, record in store.all(PROGRESS).items()
    }


@dataclass
class PhaseProgress:
    """How far the phase a run began last is."""

    label: str
    stage: str
    done: int
    total: int
    started: float
    last_done: float | None  # when its last item was written
    rate: float | None  # items per second over the last RATE_WINDOW_S (None: no item finished in it)
    tokens: tuple[int, int, float] | None = None  # a training phase's (trained, total, when) tokens, if recorded

    def seconds_left(self) -> float | None:
        if self.rate:
            return (self.total - self.done) / self.rate
        if self.tokens is not None and self.tokens[0] > 0:  # no item finished lately: the tokens' pace tells
            trained, total, when = self.tokens
            return (total - trained) * (when - self.started) / trained
        return None


@dataclass
class RunStatus:
    """Where a run is (`read_status`)."""

    run: Path
    model: str | None
    holder: str | None  # the command that holds the run (what run.lock says), while it runs
    locked_runs: bool  # the run has a run.lock (runs from before seal locked them do not say whether they run)
    finished: bool  # results.json is written
    rounds: tuple[int, int] | None  # (policies trained, rounds) of a ReST-EM run
    phase: PhaseProgress | None
    evaluation: tuple[str, dict] | None  # the last evaluation's name and table
    now: float


def running_holder(run: Path) -> str | None:
    """The command holding the run's lock (its line in run.lock) while its process lives; None when no
    command holds the run (the line a killed command left behind names a process that is gone)."""
    path = run / LOCK_FILE
    line = path.read_text().strip() if path.exists() else ""
    match = re.match(r"pid (\d+) on (\S+) ", line)
    if match is None:
        return None
    pid, host = int(match.group(1)), match.group(2)
    if host != socket.gethostname():
        return line  # another machine's process: taken at its word
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, someone else's
    return line


def read_status(run: str | Path, now: float | None = None) -> RunStatus:
    """Where the run in `run` is, read without a lock and without writing, while another process may write it.

    Args:
        run: a run directory.
        now: the time to measure against (seconds since the epoch; default: now).
    """
    run = Path(run)
    now = time.time() if now is None else now
    with RunStore(run, None, read_only=True) as store:
        config_path = run / CONFIG_FILE
        config = parse_yaml(config_path.read_text(), str(config_path)) if config_path.exists() else None
        config = config if isinstance(config, dict) else {}
        rounds = (len(store.keys("policy")), config["rounds"]) if "rounds" in config else None
        return RunStatus(
            run=run,
            model=(config.get("model") or {}).get("name"),
            holder=running_holder(run),
            locked_runs=(run / LOCK_FILE).exists(),
            finished=(run / RESULTS_FILE).exists(),
            rounds=rounds,
            phase=_current_phase(store, now),
            evaluation=_last_evaluation(store),
            now=now,
        )


def _current_phase(store: RunStore, now: float) -> PhaseProgress | None:
    recorded = phases(store)
    if not recorded:
        return None
    phase = max(recorded.values(), key=lambda p: p["started"])
    times = store.write_times(phase["kind"], phase["keys"])
    done = len(set(phase["keys"]) & store.keys(phase["kind"]))
    window_start = max(phase["started"], now - RATE_WINDOW_S)
    recent = [t for t, _ in times.values() if t >= window_start]
    span = now - window_start
    training, trained_at = store.get(TRAINING, phase["label"]), store.write_times(TRAINING, [phase["label"]])
    when = trained_at.get(phase["label"], (0.0, 0))[0]
    tokens = (training["trained"], training["total"], when) if training and when >= phase["started"] else None
    return PhaseProgress(
        label=phase["label"],
        stage=phase["stage"],
        done=done,
        total=len(phase["keys"]),
        started=phase["started"],
        last_done=max((t for t, _ in times.values()), default=None),
        rate=len(recent) / span if recent and span > 0 else None,
        tokens=tokens,
    )


def _last_evaluation(store: RunStore) -> tuple[str, dict] | None:
    evaluations = store.all(EVALUATIONS)
    if not evaluations:
        return None
    times = store.write_times(EVALUATIONS)
    name = max(evaluations, key=lambda n: (times.get(n, (0.0, 0)), n))
    return name, evaluations[name]


def duration(seconds: float) -> str:
    """`45s`, `3m 10s`, `2h 05m`."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def format_status(status: RunStatus) -> str:
    """The status as the lines `seal status` prints."""
    lines = [f"run: {status.run}" + (f" (model {status.model})" if status.model else "")]
    if status.holder is not None:
        lines.append(f"state: running: {status.holder}")
    elif status.finished:
        lines.append("state: finished")
    elif status.locked_runs:
        lines.append("state: not running (re-run its command to resume)")
    else:
        lines.append("state: unknown (no run.lock: written by a seal from before runs were locked)")
    if status.rounds is not None:
        trained, rounds = status.rounds
        lines.append(f"round: {trained + 1} of {rounds}" if trained < rounds else f"round: all {rounds} trained")
    phase = status.phase
    if phase is None:
        lines.append("phase: not recorded (a run from before seal recorded its phases)")
    else:
        share = f" ({phase.done / phase.total:.0%})" if phase.total else ""
        lines.append(f"phase: {phase.label}: {phase.done} of {phase.total} {DONE.get(phase.stage, 'done')}{share}")
        if phase.tokens is not None and phase.tokens[1]:
            trained, total, _ = phase.tokens
            lines.append(f"  trained {trained:,} of {total:,} tokens ({trained / total:.0%})")
        timing = [f"began {duration(status.now - phase.started)} ago"]
        if phase.last_done is not None:
            timing.append(f"last item {duration(status.now - phase.last_done)} ago")
        if status.holder is not None and phase.done < phase.total:
            if phase.rate:
                timing.append(f"recent rate {phase.rate * 60:.3g} per minute")
            if phase.seconds_left() is not None:
                timing.append(f"about {duration(phase.seconds_left())} left in this phase")
            if not phase.rate and phase.seconds_left() is None:
                timing.append("no item finished lately: no estimate yet")
        lines.append("  " + "; ".join(timing))
    if status.evaluation is not None:
        name, table = status.evaluation
        lines += ["", f"last evaluation ({name}), mean [95% interval over contexts]:", "", evaluation_table(table)]
    return "\n".join(lines)


def evaluation_table(table: dict[str, dict[str, dict]]) -> str:
    metrics = list(dict.fromkeys(m for by_metric in table.values() for m in by_metric))
    rows = [[condition, *[_interval(by_metric.get(m)) for m in metrics]] for condition, by_metric in table.items()]
    return markdown_table(["condition", *metrics], rows)


def _interval(ci: dict | None) -> str:
    return "-" if not ci or ci.get("mean") is None else format_ci(ci)


def show_status(run: str | Path, console: Console, watch: bool = False, every: float = 5.0) -> None:
    """Print the run's status; with `watch`, again every `every` seconds until the run stops (or Ctrl-C).

    Args:
        run: a run directory.
        console: where to print.
        watch: refresh in place (the screen is cleared between prints on a terminal).
        every: seconds between refreshes.
    """
    try:
        while True:
            status = read_status(run)
            if watch:
                console.clear()
            console.print(format_status(status), markup=False, highlight=False, soft_wrap=True)
            if not watch or status.holder is None:
                return
            time.sleep(every)
    except KeyboardInterrupt:
        return
