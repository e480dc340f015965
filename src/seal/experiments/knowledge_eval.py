"""The paper's single-passage table: how much of a passage does the model absorb under each condition?

Conditions
- base: the unadapted model, closed-book;
- in-context: the passage in the prompt (an upper bound for what training can reach);
- passage: a LoRA trained on the passage alone;
- one of the self-edit variants (implications, rewrite, self-qa, ...): the model writes k
  self-edits per passage, a LoRA is trained on each plan (self-edit documents + passage);
- file: the same with self-edits written elsewhere (a synthetic-data file's `completions`).
"""

from __future__ import annotations

import json
import statistics
import zlib
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from seal.config import KnowledgeEvalConfig
from seal.domains import knowledge
from seal.domains.knowledge import DataError, Passage
from seal.grading import LLMJudge
from seal.loop import AdaptJob, Probe, adapt_and_score, score_probes
from seal.models import LoadedModel, load_model
from seal.sampling import generate
from seal.store import RunStore

UNADAPTED = ("base", "in-context")
ADAPTED_FIXED = ("passage", "file")
KNOWN = UNADAPTED + ADAPTED_FIXED + knowledge.VARIANTS
RESULTS_FILE = "results.json"
RECORDS_FILE = "records.jsonl"


def stable_seed(*parts: object) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode()) & 0x7FFFFFFF


def validate(cfg: KnowledgeEvalConfig) -> None:
    unknown = [c for c in cfg.conditions if c not in KNOWN]
    if unknown:
        raise ValueError(f"unknown condition(s) {', '.join(unknown)}; choose from {', '.join(KNOWN)}")
    metrics = set(_metrics(cfg))
    if cfg.reward not in metrics:
        raise ValueError(f"reward {cfg.reward!r} is not available; choose from {', '.join(sorted(metrics))}")


def select_passages(cfg: KnowledgeEvalConfig) -> list[Passage]:
    passages = knowledge.load_passages(cfg.data)
    if cfg.paper_subset:
        return knowledge.paper_subset(passages, cfg.passages)
    return passages if cfg.passages is None else passages[: cfg.passages]


def file_self_edits(cfg: KnowledgeEvalConfig, passages: list[Passage]) -> dict[str, list[str]]:
    """Self-edits for the 'file' condition, matched to the evaluated passages by their text."""
    source = knowledge.load_passages(cfg.self_edits_file) if cfg.self_edits_file else passages
    by_text = {(p.title, p.context): p.completions for p in source if p.completions is not None}
    out, missing = {}, []
    for p in passages:
        completions = by_text.get((p.title, p.context))
        if completions is None:
            missing.append(p.title)
        else:
            out[p.key] = completions[: cfg.sampling.k]
    if missing:
        where = cfg.self_edits_file or cfg.data
        raise DataError(f"{where}: no completions for {len(missing)} evaluated passage(s), e.g. {missing[0]!r}")
    return out


def probes_for(lm: LoadedModel, passage: Passage, in_context: bool = False) -> list[Probe]:
    return [
        Probe(
            question=q.question,
            gold=q.answer,
            prompt=knowledge.answer_prompt(lm, passage, q, in_context),
            continuation=knowledge.gold_continuation(lm, q),
        )
        for q in passage.questions
    ]


class KnowledgeEval:
    def __init__(self, cfg: KnowledgeEvalConfig, out: str | Path, console: Console | None = None):
        validate(cfg)
        self.cfg = cfg
        self.console = console or Console()
        self.passages = select_passages(cfg)
        self.from_file = file_self_edits(cfg, self.passages) if "file" in cfg.conditions else {}
        self.store = RunStore(out, cfg)
        self.lm: LoadedModel | None = None
        self.judge = LLMJudge(cfg.judge) if cfg.judge else None

    def _model(self) -> LoadedModel:
        if self.lm is None:
            m = self.cfg.model
            self.lm = load_model(m.name, m.dtype, chat_template=m.chat_template)
        return self.lm

    def _progress(self) -> Progress:
        return Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
        )

    # --- phases ----------------------------------------------------------------------------------

    def score_unadapted(self, condition: str) -> None:
        todo = [p for p in self.passages if self.store.get("answers", f"{condition}/{p.key}/0") is None]
        if not todo:
            return
        lm = self._model()
        per_passage = [probes_for(lm, p, in_context=condition == "in-context") for p in todo]
        probes = [probe for group in per_passage for probe in group]
        with self._progress() as progress:
            task = progress.add_task(f"{condition}: answering", total=len(probes))
            records = score_probes(
                lm, probes, self.cfg.answer, judge=self.judge, progress=lambda n: progress.advance(task, n)
            )
        items, offset = [], 0
        for passage, group in zip(todo, per_passage):
            items.append((f"{condition}/{passage.key}/0", records[offset : offset + len(group)]))
            offset += len(group)
        self.store.put_many("answers", items)

    def sample_self_edits(self, variant: str) -> None:
        """k self-edits per passage, in fixed batches seeded by their index, so a resumed run samples the same."""
        k, sampling = self.cfg.sampling.k, self.cfg.sampling
        wanted = [(p, i) for p in self.passages for i in range(k)]
        batches = [wanted[s : s + sampling.batch_size] for s in range(0, len(wanted), sampling.batch_size)]
        done = self.store.keys("self_edits")
        todo = [(b, batch) for b, batch in enumerate(batches) if any(f"{variant}/{p.key}/{i}" not in done for p, i in batch)]
        if not todo:
            return
        lm = self._model()
        with self._progress() as progress:
            task = progress.add_task(f"{variant}: writing self-edits", total=sum(len(b) for _, b in todo))
            for b, batch in todo:
                prompts = [knowledge.self_edit_prompt(p, variant) for p, _ in batch]
                torch.manual_seed(stable_seed(self.cfg.seed, variant, b))
                texts = generate(
                    lm,
                    [lm.format_prompt(x) for x in prompts],
                    max_new_tokens=sampling.max_new_tokens,
                    temperature=sampling.temperature,
                    top_p=sampling.top_p,
                    batch_size=sampling.batch_size,
                )
                self.store.put_many(
                    "self_edits",
                    [(f"{variant}/{p.key}/{i}", {"prompt": x, "text": t}) for (p, i), x, t in zip(batch, prompts, texts)],
                )
                progress.advance(task, len(batch))

    def self_edits(self, condition: str, passage: Passage, sampled: dict[str, dict]) -> list[str]:
        if condition == "passage":
            return [""]
        if condition == "file":
            return self.from_file[passage.key]
        return [sampled[f"{condition}/{passage.key}/{i}"]["text"] for i in range(self.cfg.sampling.k)]

    def adapt_conditions(self, conditions: list[str]) -> None:
        done, sampled = self.store.keys("answers"), self.store.all("self_edits")
        lm = self._model() if conditions else None
        jobs = []
        for condition in conditions:
            variant = condition if condition in knowledge.VARIANTS else "implications"
            for passage in self.passages:
                for i, text in enumerate(self.self_edits(condition, passage, sampled)):
                    key = f"{condition}/{passage.key}/{i}"
                    if key in done:
                        continue
                    plan = knowledge.plan(passage, text, variant, self.cfg.split_lines)
                    jobs.append(AdaptJob(key, plan.documents, probes_for(lm, passage), stable_seed(self.cfg.seed, key)))
        if not jobs:
            return
        with self._progress() as progress:
            task = progress.add_task("adapting and scoring", total=len(jobs))
            adapter_dir = self.store.dir / "adapters" if self.cfg.adapt.keep_adapters else None
            for results in adapt_and_score(
                lm, jobs, self.cfg.adapt, self.cfg.answer, judge=self.judge, adapter_dir=adapter_dir
            ):
                self.store.put_many("answers", [(r.key, r.probes) for r in results])
                self.store.put_many(
                    "adapt",
                    [(r.key, {"loss_first": r.losses[0], "loss_last": r.losses[1], "steps": r.steps, "seconds": r.seconds}) for r in results],
                )
                progress.advance(task, len(results))

    # --- the whole run ---------------------------------------------------------------------------

    def run(self) -> dict:
        conditions = list(dict.fromkeys(["base", *self.cfg.conditions]))  # base is needed for every gain
        for condition in conditions:
            if condition in UNADAPTED:
                self.score_unadapted(condition)
        for condition in conditions:
            if condition in knowledge.VARIANTS:
                self.sample_self_edits(condition)
        self.adapt_conditions([c for c in conditions if c not in UNADAPTED])
        results = summarise(self.cfg, self.passages, conditions, self.store)
        (self.store.dir / RESULTS_FILE).write_text(json.dumps(results, indent=2))
        write_records(self.store, self.passages, conditions)
        return results


def _metrics(cfg: KnowledgeEvalConfig) -> list[str]:
    return ["em", "f1", "verdict", "loglik"] + (["judge"] if cfg.judge else [])


def _mean(xs: list[float]) -> float:
    return statistics.fmean(xs) if xs else float("nan")


def summarise(cfg: KnowledgeEvalConfig, passages: list[Passage], conditions: list[str], store: RunStore) -> dict:
    answers, adapt = store.all("answers"), store.all("adapt")
    metrics = _metrics(cfg)
    per_passage: dict[str, dict[str, dict[str, float]]] = {p.key: {} for p in passages}
    summary: dict[str, dict] = {}
    for condition in conditions:
        passage_means: dict[str, list[float]] = {m: [] for m in metrics}
        question_values: dict[str, list[float]] = {m: [] for m in metrics}
        seconds, n_self_edits = [], 0
        for p in passages:
            runs = [v for k, v in answers.items() if k.startswith(f"{condition}/{p.key}/")]
            n_self_edits += len(runs)
            seconds += [adapt[k]["seconds"] for k in adapt if k.startswith(f"{condition}/{p.key}/")]
            # A passage's score under a condition: the mean over its self-edits of the mean over its questions.
            per_passage[p.key][condition] = {
                m: _mean([_mean([q[m] for q in run]) for run in runs]) for m in metrics
            }
            for m in metrics:
                passage_means[m].append(per_passage[p.key][condition][m])
                question_values[m] += [q[m] for run in runs for q in run]
        summary[condition] = {
            "macro": {m: _mean(passage_means[m]) for m in metrics},
            "micro": {m: _mean(question_values[m]) for m in metrics},
            "n_self_edits": 0 if condition in UNADAPTED else n_self_edits,
            "seconds_per_self_edit": _mean(seconds) if seconds else None,
        }
    for condition in conditions:
        gains = [per_passage[p.key][condition][cfg.reward] - per_passage[p.key]["base"][cfg.reward] for p in passages]
        summary[condition]["gain"] = _mean(gains)
        summary[condition]["gain_std"] = statistics.pstdev(gains) if gains else float("nan")
    return {
        "schema": "seal.knowledge.eval/1",
        "model": cfg.model.name,
        "reward": cfg.reward,
        "n_passages": len(passages),
        "n_questions": sum(len(p.questions) for p in passages),
        "conditions": summary,
        "passages": [
            {"key": p.key, "source_index": p.source_index, "title": p.title, "scores": per_passage[p.key]}
            for p in passages
        ],
    }


def write_records(store: RunStore, passages: list[Passage], conditions: list[str]) -> None:
    """One line per (condition, passage, self-edit, question), with the unadapted answer beside the adapted one."""
    answers, self_edits = store.all("answers"), store.all("self_edits")
    by_key = {p.key: p for p in passages}
    with open(store.dir / RECORDS_FILE, "w") as f:
        for key, run in answers.items():
            condition, passage_key, index = key.split("/")
            if condition not in conditions or passage_key not in by_key:
                continue
            before = answers[f"base/{passage_key}/0"]
            edit = self_edits.get(key, {}).get("text")
            for qi, q in enumerate(run):
                row = {"condition": condition, "passage": passage_key, "self_edit_index": int(index), "question_index": qi}
                row |= {"question": q["question"], "gold": q["gold"], "answer_before": before[qi]["answer"]}
                row |= {k: v for k, v in q.items() if k not in ("question", "gold")}
                if edit is not None and qi == 0:
                    row["self_edit"] = edit
                f.write(json.dumps(row) + "\n")


def results_table(results: dict) -> Table:
    metrics = list(next(iter(results["conditions"].values()))["macro"])
    table = Table(title=f"{results['model']}: {results['n_passages']} passages, {results['n_questions']} questions")
    table.add_column("condition")
    for m in metrics:
        table.add_column(m, justify="right")
    table.add_column(f"gain ({results['reward']})", justify="right")
    table.add_column("self-edits", justify="right")
    table.add_column("s/self-edit", justify="right")
    for name, row in results["conditions"].items():
        secs = row["seconds_per_self_edit"]
        table.add_row(
            name,
            *[f"{row['macro'][m]:.3f}" for m in metrics],
            f"{row['gain']:+.3f}",
            str(row["n_self_edits"] or "-"),
            f"{secs:.1f}" if secs else "-",
        )
    return table
