"""Watch a run while it runs: what the run store writes, as events for TensorBoard, Weights & Biases and MLflow.

The store stays the source of truth. A `Tracker` observes it (`RunStore.observe`) and turns each write of
records into `Events` (scalars, histograms, curves) numbered by the write's step, the store's own counter,
so a resumed run goes on counting. The same events go to every sink, and no sink knows an experiment.

Each sink's last step is saved in RUN/tracking/state.json once the sink has the step's events. When a sink
is opened, the writes after its saved step are replayed from the store: the write a kill interrupted before
its events were saved as given, or the whole run for a sink added to a run already under way (`tracking`
may change on a resume). A killed and resumed run so logs each step once: TensorBoard hides what an earlier
process logged after the saved step, W&B drops a step it has (MLflow keeps both copies of the one step a
kill can catch between a sink's write and the saved state).

Events, by the record kind written (`seal.status` describes `progress` and `evaluations`):
- answers of adapted models (one adapt-and-score batch; their `adapt` records, or ARC's records themselves,
  tell how each trained): `inner/loss_first`, `inner/loss_last` (mean and histogram over the batch's
  self-edits), `inner/steps`, `score/{metric}` (mean and histogram of each adapted model's score),
  `throughput/adapted_per_minute`, `throughput/train_tokens_per_second`, and, logged live only,
  `system/peak_rss_gb` (this process) and `system/peak_gpu_gb` (allocated by torch);
- other answers: `answers/{metric}` (means) where a phase answers without adapting; `self_edits/invalid`
  for self-edits recorded as not parsing;
- self_edits: `self_edits/words` (mean and histogram), `self_edits/empty`, `throughput/sampled_per_minute`;
  resamples: `self_edits/resampled`;
- selections (a ReST-EM round's choice): `round`, `round/reward_mean`, `round/reward` (histogram),
  `round/gaining`, `round/invalid`, `round/kept_share`;
- policy (a round's fine-tune): `round`, `sft/examples`, `sft/loss_first`, `sft/loss_last`, `sft/seconds`,
  and the curve `sft/round-{r}/loss` (one point per optimiser step);
- evaluations: `round` (the policy evaluated; 0 for a run without rounds), `eval/{condition}/{metric}` with
  its 95% interval as `eval/{condition}/{metric}_lo` and `_hi`;
- steps (a continual step): `continual/loss_first`, `continual/loss_last`, `continual/documents`.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import re
import resource
import secrets
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from seal.status import PROGRESS, phases
from seal.store import RunStore, atomic_file

TRACKING_DIR = "tracking"
STATE_FILE = "state.json"
SINK_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
INSTALL = "pip install 'seal[tracking]'"

log = logging.getLogger(__name__)


@dataclass
class Events:
    """What one write of the store tells, at its step."""

    step: int
    scalars: dict[str, float] = field(default_factory=dict)
    histograms: dict[str, list[float]] = field(default_factory=dict)
    curves: dict[str, list[float]] = field(default_factory=dict)  # own x axis 1, 2, ... (a fine-tune's steps)

    def __bool__(self) -> bool:
        return bool(self.scalars or self.histograms or self.curves)

    def distribution(self, name: str, values: list[float | None]) -> None:
        """The mean of `values` as a scalar and all of them as a histogram (None and NaN left out)."""
        finite = _finite(values)
        if finite:
            self.scalars[name] = statistics.fmean(finite)
            self.histograms[name] = finite


def _finite(values: list[Any]) -> list[float]:
    return [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]


def _round_of(record_key: str) -> int | None:
    """The round a record belongs to by its key's first part: `r2/...` (round 2), `e1` (policy 1's evaluation)."""
    match = re.match(r"[re](\d+)(/|$)", record_key)
    return int(match.group(1)) if match else None


def scores(record: Any) -> dict[str, float]:
    """A scored record's score per metric: the mean over its questions of each grader's score (knowledge), or
    whether it solved its task (ARC)."""
    if isinstance(record, dict):
        return {"solved": float(record["solved"])} if "solved" in record else {}
    if not record:
        return {}
    names = [k for k, v in record[0].items() if _finite([v])]
    return {name: statistics.fmean(float(q[name]) for q in record) for name in names}


class Tracker:
    """Turns every write of a run store into events for the named sinks (an `seal.store.Observer`).

    Args:
        store: the run's store (a writer); the tracker observes it from now on.
        sinks: names from `SINK_PACKAGES`; each needs its package (`check_sinks`).
        config: the run's resolved config, given to the sinks that keep one (W&B's config, MLflow's params).
    """

    def __init__(self, store: RunStore, sinks: list[str], config: dict):
        self.store, self.names, self.config = store, list(sinks), config
        self.dir = store.dir / TRACKING_DIR
        self.sinks: dict[str, Sink] | None = None  # None: not open
        state_path = self.dir / STATE_FILE
        self.state: dict[str, dict] = json.loads(state_path.read_text()) if state_path.exists() else {}
        self._phases: dict[str, dict] | None = None
        store.observe(self)
        reached = store.step()
        if any(self.state.get(name, {}).get("step", 0) < reached for name in self.names):
            self._open(before=reached + 1)  # a resumed run: the sinks catch up with the store now

    # --- events ------------------------------------------------------------------------------------------

    def events(self, kind: str, items: list[tuple[str, Any]], step: int) -> Events:
        """The events of a write of `items` of `kind` that the store numbered `step` (empty for a kind
        that tells nothing: timing, progress)."""
        events = Events(step)
        handler = getattr(self, f"_{kind}", None)
        if handler is not None and items:
            handler(events, items)
        return events

    def _adapted(self, events: Events, trained: list[tuple[str, dict, dict]]) -> None:
        """Inner-loop events of (key, training record, scores) per adapted self-edit."""
        events.distribution("inner/loss_first", [t.get("loss_first") for _, t, _ in trained])
        events.distribution("inner/loss_last", [t.get("loss_last") for _, t, _ in trained])
        steps = _finite([t.get("steps") for _, t, _ in trained])
        if steps:
            events.scalars["inner/steps"] = statistics.fmean(steps)
        for metric in sorted({m for _, _, s in trained for m in s}):
            events.distribution(f"score/{metric}", [s.get(metric) for _, _, s in trained])
        seconds = self._seconds_since_previous("answers", [k for k, _, _ in trained], events.step)
        if seconds:
            events.scalars["throughput/adapted_per_minute"] = 60 * len(trained) / seconds
            tokens = _finite([t.get("tokens") for _, t, _ in trained])
            if tokens:
                events.scalars["throughput/train_tokens_per_second"] = sum(tokens) / seconds

    def _answers(self, events: Events, items: list[tuple[str, Any]]) -> None:
        invalid = [v for _, v in items if isinstance(v, dict) and v.get("valid") is False]
        if invalid:
            events.scalars["self_edits/invalid"] = float(len(invalid))
        trained = []
        for record_key, record in items:  # an adapted model's answers: its training recorded before them
            if isinstance(record, dict) and "loss" in record:  # ARC: in the record itself
                training = {"loss_first": record["loss"][0], "loss_last": record["loss"][1]} | record
            else:
                training = self.store.get("adapt", record_key)
            if training is not None:
                trained.append((record_key, training, scores(record)))
        if trained:
            self._adapted(events, trained)
        elif self._stage(items[0][0]) == "answer":
            for metric in sorted({m for _, v in items for m in scores(v)}):
                values = _finite([scores(v).get(metric) for _, v in items])
                if values:
                    events.scalars[f"answers/{metric}"] = statistics.fmean(values)

    def _self_edits(self, events: Events, items: list[tuple[str, Any]]) -> None:
        words = [len(v["text"].split()) for _, v in items]
        events.distribution("self_edits/words", words)
        events.scalars["self_edits/empty"] = float(sum(w == 0 for w in words))
        seconds = self._seconds_since_previous("self_edits", [k for k, _ in items], events.step)
        if seconds:
            events.scalars["throughput/sampled_per_minute"] = 60 * len(items) / seconds

    def _resamples(self, events: Events, items: list[tuple[str, Any]]) -> None:
        events.scalars["self_edits/resampled"] = float(sum(len(planned) for _, planned in items))

    def _selections(self, events: Events, items: list[tuple[str, Any]]) -> None:
        self._round(events, items[0][0])
        rewards = [r for _, v in items for r in v["rewards"]]
        valid = _finite(rewards)
        events.distribution("round/reward", valid)
        if valid:
            events.scalars["round/reward_mean"] = statistics.fmean(valid)
            events.scalars["round/gaining"] = statistics.fmean(float(r > 0) for r in valid)
        events.scalars["round/invalid"] = float(len(rewards) - len(valid))
        if rewards:
            events.scalars["round/kept_share"] = sum(len(v["kept"]) for _, v in items) / len(rewards)

    def _policy(self, events: Events, items: list[tuple[str, Any]]) -> None:
        for policy_key, record in items:
            r = self._round(events, policy_key)
            events.scalars["sft/examples"] = float(record["examples"])
            losses = _finite(record.get("losses") or [])
            if losses:
                events.scalars["sft/loss_first"], events.scalars["sft/loss_last"] = losses[0], losses[-1]
                events.curves[f"sft/round-{r}/loss"] = losses
            if "seconds" in record:
                events.scalars["sft/seconds"] = record["seconds"]

    def _evaluations(self, events: Events, items: list[tuple[str, Any]]) -> None:
        for name, table in items:
            self._round(events, name)
            for condition, by_metric in table.items():
                for metric, interval in by_metric.items():
                    for part, suffix in (("mean", ""), ("lo", "_lo"), ("hi", "_hi")):
                        value = interval.get(part)
                        if _finite([value]):
                            events.scalars[f"eval/{condition}/{metric}{suffix}"] = value

    def _steps(self, events: Events, items: list[tuple[str, Any]]) -> None:
        events.distribution("continual/loss_first", [v["losses"][0] for _, v in items])
        events.distribution("continual/loss_last", [v["losses"][1] for _, v in items])
        events.scalars["continual/documents"] = statistics.fmean(v["documents"] for _, v in items)

    def _round(self, events: Events, record_key: str) -> int:
        r = _round_of(record_key) or 0
        events.scalars["round"] = float(r)
        return r

    # --- phases and throughput ---------------------------------------------------------------------------

    def phase_of(self, record_key: str) -> dict | None:
        """The phase (`seal.status.phases`) that plans `record_key`, the one started last."""
        if self._phases is None:
            self._phases = {}
            for phase in sorted(phases(self.store).values(), key=lambda p: p["started"]):
                self._phases |= dict.fromkeys(phase["keys"], phase)
        return self._phases.get(record_key)

    def _stage(self, record_key: str) -> str | None:
        phase = self.phase_of(record_key)
        return None if phase is None else phase["stage"]

    def _seconds_since_previous(self, kind: str, keys: list[str], step: int) -> float | None:
        """Seconds from the previous write of `kind` in the phase of `keys` (or the phase's start) to this
        write: the time this write's items took. None when it cannot be told (no phase recorded)."""
        phase = self.phase_of(keys[0])
        if phase is None:
            return None
        times = self.store.write_times(kind, phase["keys"])
        now = max((t for k, (t, s) in times.items() if s == step), default=None)
        before = [t for t, s in times.values() if s < step and t >= phase["started"]]
        if now is None:
            return None
        seconds = now - max([phase["started"], *before])
        return seconds if seconds > 0 else None

    # --- sinks ---------------------------------------------------------------------------------------------

    def written(self, store: RunStore, kind: str, items: list[tuple[str, Any]], step: int) -> None:
        """Log the events of a write (after the writes before it that a sink has not logged yet)."""
        if kind == PROGRESS:
            self._phases = None
        events = self.events(kind, items, step)
        if not events:
            return
        if kind in ("answers", "policy"):
            events.scalars |= peak_memory()
        self._open(before=step)
        self._log(events)

    def _open(self, before: int) -> None:
        """Open the sinks (when they are not) and replay the writes before step `before` they have not logged."""
        if self.sinks is not None:
            return
        self.sinks = {}
        self.dir.mkdir(parents=True, exist_ok=True)
        for name in self.names:
            state = self.state.setdefault(name, {"step": 0})
            try:
                self.sinks[name] = SINKS[name](self.dir, state, self.store.dir.name, self.config)
            except Exception as err:  # a tracker that cannot start must not stop hours of work
                log.warning("tracking: %s could not start (%s); the run goes on without it", name, err)
        replay_from = min((self.state[name]["step"] for name in self.sinks), default=before)
        for step, kind, items in self.store.writes_after(replay_from):
            if step >= before:
                break
            events = self.events(kind, items, step)
            if events:
                self._log(events)
        self._caught_up(before - 1)

    def _log(self, events: Events) -> None:
        for name in [name for name in self.sinks if self.state[name]["step"] < events.step]:
            try:
                self.sinks[name].write(events)
            except Exception as err:
                log.warning("tracking: %s failed (%s); the run goes on without it", name, err)
                self._close_sink(name)
                continue
            self.state[name]["step"] = events.step
        self._save_state()  # after the sinks have the events: a kill before this replays them (`Sink`)

    def _caught_up(self, step: int) -> None:
        """The open sinks have every event up to `step` (the writes after their last event told nothing)."""
        for name in self.sinks:
            self.state[name]["step"] = max(self.state[name]["step"], step)
        self._save_state()

    def _save_state(self) -> None:
        with atomic_file(self.dir / STATE_FILE) as partial:
            partial.write_text(json.dumps(self.state, indent=1))

    def _close_sink(self, name: str) -> None:
        sink = self.sinks.pop(name)
        try:
            sink.close()
        except Exception as err:
            log.warning("tracking: %s did not close cleanly (%s)", name, err)

    def closed(self, store: RunStore) -> None:
        """Flush and close the sinks; a later write opens them again."""
        if self.sinks is None:
            return
        self._caught_up(store.step())
        for name in list(self.sinks):
            self._close_sink(name)
        self.sinks = None


def check_sinks(sinks: list[str]) -> None:
    """A `ValueError` naming what to install when a sink's package is missing (before the run starts)."""
    for name in sinks:
        if name not in SINK_PACKAGES:
            raise ValueError(f"unknown tracking sink {name!r}; choose from {', '.join(SINK_PACKAGES)}")
        if importlib.util.find_spec(SINK_PACKAGES[name]) is None:
            raise ValueError(f"tracking: {name} needs the {SINK_PACKAGES[name]} package ({INSTALL})")


def peak_memory() -> dict[str, float]:
    """The peak resident memory of this process, and the peak GPU memory torch allocated (on a GPU), in GiB."""
    import torch

    out = {"system/peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}  # KiB on Linux
    if torch.cuda.is_available():
        out["system/peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return out


class Sink(Protocol):
    """Where events go: opened on a run's tracking directory with its saved state (`step`: the last step it was
    given; the sink may keep its run's id there), given each step's events in increasing steps, closed when the
    store closes. A step it was given just before a kill, before its state was saved, is given again: the sink
    hides or drops the first copy where its tool allows (TensorBoard, W&B)."""

    def write(self, events: Events) -> None: ...

    def close(self) -> None: ...


class TensorBoardSink:
    """Event files under RUN/tracking/tensorboard (`tensorboard --logdir RUN/tracking/tensorboard`); a curve
    is a run of its own beside them (`sft/round-1`: tag `loss` against the fine-tune's steps), so the curves
    of every round share one chart."""

    def __init__(self, directory: Path, state: dict, run_name: str, config: dict):
        from torch.utils.tensorboard import SummaryWriter

        self.writer_class, self.dir = SummaryWriter, directory / "tensorboard"
        # A resumed run hides what an earlier process logged after its last saved step: replayed next.
        self.writer = SummaryWriter(str(self.dir), purge_step=state["step"] + 1 if self.dir.exists() else None)

    def write(self, events: Events) -> None:
        import numpy as np

        for name, value in events.scalars.items():
            self.writer.add_scalar(name, value, events.step)
        for name, values in events.histograms.items():
            self.writer.add_histogram(name, np.asarray(values), events.step)
        self.writer.flush()
        for name, values in events.curves.items():
            run, tag = name.rsplit("/", 1)
            with self.writer_class(str(self.dir / run), purge_step=1) as curve:  # a curve written again replaces
                for x, value in enumerate(values, 1):
                    curve.add_scalar(tag, value, x)

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """A W&B run under RUN/tracking/wandb: offline unless WANDB_MODE says otherwise (`wandb sync` uploads
    it), its id saved so a resumed run goes on in the same W&B run; project from WANDB_PROJECT, else seal."""

    def __init__(self, directory: Path, state: dict, run_name: str, config: dict):
        import wandb

        self.wandb = wandb
        state.setdefault("id", secrets.token_hex(4))  # W&B's own id format: a few lowercase letters and digits
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "seal"), dir=str(directory), id=state["id"], name=run_name,
            resume="allow", mode=os.environ.get("WANDB_MODE", "offline"), config=config,
            settings=wandb.Settings(console="off"),  # the progress bars stay in the terminal
        )  # fmt: skip
        # A round's events plotted against the round, as well as against the step.
        self.run.define_metric("round")
        for prefix in ("round/*", "sft/*", "eval/*"):
            self.run.define_metric(prefix, step_metric="round")

    def write(self, events: Events) -> None:
        row: dict[str, Any] = dict(events.scalars)
        # beside the scalar of the same name (its mean), which one key could not hold too
        row |= {f"{name}/distribution": self.wandb.Histogram(values) for name, values in events.histograms.items()}
        for name, values in events.curves.items():
            table = self.wandb.Table(data=[[x, v] for x, v in enumerate(values, 1)], columns=["step", "value"])
            row[name] = self.wandb.plot.line(table, "step", "value", title=name)
        self.run.log(row, step=events.step)

    def close(self) -> None:
        self.run.finish()


class MlflowSink:
    """An MLflow run in a local SQLite store, RUN/tracking/mlflow.db (MLflow's own local store; its
    plain-file store is deprecated), experiment `seal`, its id saved so a resumed run goes on in it."""

    def __init__(self, directory: Path, state: dict, run_name: str, config: dict):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # not its database set-up, line by line
        logging.getLogger("alembic").setLevel(logging.WARNING)
        self.client = MlflowClient(tracking_uri=f"sqlite:///{directory / 'mlflow.db'}")
        if "run_id" in state:
            self.client.update_run(state["run_id"], status="RUNNING")
        else:
            experiment = self.client.get_experiment_by_name("seal")
            experiment_id = (
                experiment.experiment_id
                if experiment is not None
                else self.client.create_experiment("seal", artifact_location=(directory / "mlflow-artifacts").as_uri())
            )
            state["run_id"] = self.client.create_run(experiment_id, run_name=run_name).info.run_id
            params = [Param(name, str(value)[:6000]) for name, value in _flat(config).items()]
            for start in range(0, len(params), 100):
                self.client.log_batch(state["run_id"], params=params[start : start + 100])
        self.run_id = state["run_id"]

    def write(self, events: Events) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(_mlflow_name(k), v, now, events.step) for k, v in events.scalars.items()]
        metrics += [
            Metric(_mlflow_name(k), v, now, x) for k, values in events.curves.items() for x, v in enumerate(values, 1)
        ]
        for start in range(0, len(metrics), 1000):  # MLflow's limit per batch
            self.client.log_batch(self.run_id, metrics=metrics[start : start + 1000])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def _mlflow_name(name: str) -> str:
    return re.sub(r"[^\w\-. /]", "_", name)


def _flat(config: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in config.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{name}.")
        else:
            out[f"{prefix}{name}"] = value
    return out


SINKS: dict[str, type] = {"tensorboard": TensorBoardSink, "wandb": WandbSink, "mlflow": MlflowSink}
