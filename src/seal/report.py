"""`seal report RUN`: tables and plots from a finished run's results.json, and a Markdown report embedding them.

The kind of run is read from its results' schema; each kind has one function that writes
its plots and returns the Markdown body.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: reports are made on headless machines
import matplotlib.pyplot as plt

from seal.stats import format_ci

REPORT_DIR = "report"
REPORT_FILE = "report.md"


class ReportError(ValueError):
    pass


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path.name


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def _cell(row: dict, metric: str) -> str:
    """A condition's macro mean with its 95% interval over contexts, when the results have one."""
    ci = row.get("ci", {}).get(metric)
    return format_ci(ci) if ci else _fmt(row["macro"][metric])


def _arms(ci: dict | None) -> tuple[float, float]:
    """(below, above) the mean: an interval's arms for an error bar (0 without an interval)."""
    if not ci or ci["n"] < 2:
        return 0.0, 0.0
    return ci["mean"] - ci["lo"], ci["hi"] - ci["mean"]


def _error(row: dict, metric: str) -> tuple[float, float]:
    return _arms(row.get("ci", {}).get(metric))


def _paired_table(paired: dict, metrics: list[str]) -> str:
    """Each comparison's mean difference over contexts with its 95% interval, and wins/losses."""
    if not paired:
        return ""
    rows = [
        [name, *[f"{format_ci(d[m], signed=True)} ({d[m]['wins']}/{d[m]['losses']})" for m in metrics]]
        for name, d in paired.items()
    ]
    return (
        "Paired differences over the same contexts (mean, 95% bootstrap interval; contexts won/lost):\n\n"
        + markdown_table(["comparison", *metrics], rows)
    )


# --- ReST-EM runs ----------------------------------------------------------------------------------


def train_report(results: dict, out: Path) -> str:
    reward, variant, rounds = results["reward"], results["variant"], results["rounds"]
    numbers = [r["round"] for r in rounds]
    trained = [r for r in rounds if "train" in r]

    fig, ax = plt.subplots(figsize=(6, 4))
    for condition, style, label in ((variant, "o-", f"self-edit ({variant})"), ("base", "s--", "closed-book")):
        rows_of = [r["eval"][condition] for r in rounds]
        errors = list(zip(*[_error(row, reward) for row in rows_of]))
        ax.errorbar(numbers, [row["macro"][reward] for row in rows_of], yerr=errors, fmt=style, capsize=3, label=label)
    for name, style in (("in-context", ":"), ("passage", "-.")):
        if name in rounds[0]["eval"]:
            ax.axhline(
                rounds[0]["eval"][name]["macro"][reward], linestyle=style, color="grey", label=f"{name} (policy 0)"
            )
    ax.set(xlabel="policy (ReST-EM round)", ylabel=f"held-out {reward}", xticks=numbers, title="held-out evaluation")
    ax.legend(fontsize=8)
    accuracy_png = _save(fig, out / "eval_by_round.png")

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    if trained:
        left.boxplot([[x for x in r["train"]["rewards"] if x is not None] for r in trained], showmeans=True)
        left.set_xticks(range(1, len(trained) + 1), [str(r["round"]) for r in trained])
        right.boxplot([r["train"]["self_edit_words"] for r in trained], showmeans=True)
        right.set_xticks(range(1, len(trained) + 1), [str(r["round"]) for r in trained])
    left.axhline(0, color="grey", linewidth=0.8)
    left.set(xlabel="round", ylabel=f"reward ({reward} gain over unadapted)", title="reward of sampled self-edits")
    right.set(xlabel="round", ylabel="words", title="self-edit length")
    distributions_png = _save(fig, out / "rewards_and_lengths.png")

    header = ["round", "train reward (mean ± std)", "gaining", "invalid", "kept", "SFT loss first → last",
              "eval closed-book", "eval in context", f"eval {variant}", "eval gain", "words/self-edit",
              "seconds"]  # fmt: skip
    rows = []
    for r in rounds:
        t, ev = r.get("train"), r["eval"]
        loss = t and t["sft_loss_first_last"]
        rows.append([
            str(r["round"]),
            f"{t['reward_mean']:+.3f} ± {t['reward_std']:.3f}" if t else "-",
            f"{t['fraction_gaining']:.0%}" if t else "-",
            str(t["invalid"]) if t else "-",
            str(t["kept"]) if t else "-",
            f"{loss[0]:.3f} → {loss[1]:.3f}" if loss else "-",
            _fmt(ev["base"]["macro"][reward]),
            _fmt(ev["in-context"]["macro"][reward]) if "in-context" in ev else "-",
            _fmt(ev[variant]["macro"][reward]),
            f"{ev[variant]['gain']:+.3f}",
            f"{r['eval_self_edit_words']:.0f}",
            f"{(t['seconds'] if t else 0) + (r['eval_seconds'] or 0):.0f}",
        ])  # fmt: skip
    metrics = list(rounds[0]["eval"]["base"]["macro"])
    held_out = [
        [name, *[_cell(row, m) for m in metrics]]
        for name, row in [("base", rounds[0]["eval"]["base"])]
        + [(c, rounds[0]["eval"][c]) for c in rounds[0]["eval"] if c not in ("base", variant)]
        + [(f"{variant}@{r['round']}", r["eval"][variant]) for r in rounds]
    ]
    parts = [
        f"# ReST-EM: {results['model']}",
        f"{results['n_train_passages']} training passages, {results['n_eval_passages']} held-out passages "
        f"({results['n_eval_questions']} questions); reward: {reward}; self-edit prompt: {variant}. "
        "Round 0 is the initial policy (no training); train columns describe the round that produced the policy.",
        markdown_table(header, rows),
        reward_diagnostics_section(trained),
        "Held-out passages (baselines with the initial policy; `"
        + variant
        + "@r`: the self-edits of policy r), macro means with 95% bootstrap intervals over passages:\n\n"
        + markdown_table(["condition", *metrics], held_out),
        _paired_table(results.get("paired", {}), metrics),
        f"![held-out evaluation by round]({accuracy_png})",
        f"![reward and self-edit length by round]({distributions_png})",
    ]
    return "\n\n".join(part for part in parts if part)


def reward_diagnostics_section(trained: list[dict]) -> str:
    """Per round with two or more inner-loop runs of each self-edit: how well two runs agree on the rewards and
    on each context's best self-edit, and the spread between a context's self-edits against that between runs
    (empty when no round has them)."""
    rows = [
        [
            str(r["round"]),
            f"{t['reliability']['correlation']:.2f}",
            f"{t['reliability']['within_correlation']:.2f}",
            f"{t['reliability']['same_best']:.0%} of {t['reliability']['n_contexts']} "
            f"(chance {t['reliability']['chance_best']:.0%})",
            f"{t['signal_to_noise']['between_sd']:.3f} / {t['signal_to_noise']['within_sd']:.3f} "
            f"= {t['signal_to_noise']['ratio']:.2f}",
        ]
        for r in trained
        if "reliability" in (t := r["train"])
    ]
    if not rows:
        return ""
    header = ["round", "correlation of two runs", "within contexts", "same best self-edit",
              "spread between self-edits / between runs"]  # fmt: skip
    return "Is the reward signal? Two inner-loop runs (other seeds) of the same self-edits:\n\n" + markdown_table(
        header, rows
    )


# --- single-passage evaluation runs -----------------------------------------------------------------


def _conditions_chart(conditions: dict, metrics: list[str], path: Path) -> str:
    names = list(conditions)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.6))
    for ax, metric in zip(axes, metrics):
        errors = list(zip(*[_error(conditions[c], metric) for c in names]))
        ax.bar(names, [conditions[c]["macro"][metric] for c in names], yerr=errors, capsize=3, color="tab:blue")
        ax.set_title(metric)
        ax.tick_params(axis="x", rotation=60, labelsize=7)
    return _save(fig, path)


def eval_report(results: dict, out: Path) -> str:
    conditions = results["conditions"]
    metrics = list(next(iter(conditions.values()))["macro"])
    png = _conditions_chart(conditions, metrics, out / "conditions.png")
    rows = [
        [name, *[_cell(row, m) for m in metrics], f"{row['gain']:+.3f}", str(row["n_self_edits"] or "-"),
         _fmt(row["seconds_per_self_edit"], ".1f")]
        for name, row in conditions.items()
    ]  # fmt: skip
    return "\n\n".join([
        f"# Knowledge incorporation: {results['model']}",
        f"{results['n_passages']} passages, {results['n_questions']} questions; macro-averages over passages "
        "with 95% bootstrap intervals over passages.",
        markdown_table(["condition", *metrics, f"gain ({results['reward']})", "self-edits", "s/self-edit"], rows),
        _paired_table(results.get("paired", {}), metrics),
        f"![conditions]({png})",
    ])  # fmt: skip


def cpt_report(results: dict, out: Path) -> str:
    conditions = results["conditions"]
    metrics = list(next(iter(conditions.values()))["macro"])
    png = _conditions_chart(conditions, metrics, out / "conditions.png")
    rows = []
    for name, row in conditions.items():
        t = row["training"]
        rows.append([name, *[_cell(row, m) for m in metrics],
                     f"{t['loss_first']:.3f} → {t['loss_last']:.3f} ({t['steps']} steps)" if t else "-",
                     _fmt(t and t["seconds"], ".0f")])  # fmt: skip
    return "\n\n".join(
        [
            f"# Multi-passage (continued pretraining): {results['model']}",
            f"{results['n_passages']} passages absorbed together ({results['method']}), "
            f"{results['n_questions']} questions; macro-averages over passages with 95% bootstrap intervals.",
            markdown_table(["condition", *metrics, "training loss", "seconds"], rows),
            _paired_table(results.get("paired", {}), metrics),
            f"![conditions]({png})",
        ]
    )


# --- continual self-edits ----------------------------------------------------------------------------


def _forgetting_figure(arms: dict, metric: str, T: int, path: Path) -> str:
    """One heatmap per arm of a metric's forgetting matrix (rows: after step t, columns: passage j)."""
    blocks = {name: arm.get("metrics", {}).get(metric, arm) for name, arm in arms.items()}
    values = [x for block in blocks.values() for row in block["matrix"] for x in row if x is not None]
    fig, axes = plt.subplots(1, len(blocks), figsize=(4.2 * len(blocks), 3.8), squeeze=False)
    for ax, (name, block) in zip(axes[0], blocks.items()):
        grid = [[float("nan") if x is None else x for x in row] for row in block["matrix"]]
        image = ax.imshow(grid, vmin=min(values), vmax=max(values), cmap="viridis")
        for t in range(T):
            for j in range(t + 1):
                ax.text(j, t, f"{grid[t][j]:.2f}", ha="center", va="center", fontsize=7, color="white")
        ax.set(xlabel="passage", ylabel="after step", title=f"{name}: forgetting {block['forgetting']:+.3f}",
               xticks=range(T), yticks=range(T))  # fmt: skip
    fig.colorbar(image, ax=axes[0].tolist(), label=metric)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path.name


def _retention_figure(arms: dict, metrics: list[str], T: int, path: Path) -> str:
    """Retention after each step, one panel per metric, one line per arm with its 95% interval over sequences."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for name, arm in arms.items():
            cis = arm["metrics"][metric]["retention_by_step"][1:]
            steps = [t for t, ci in enumerate(cis, start=1) if ci and ci["n"]]
            kept = [ci for ci in cis if ci and ci["n"]]
            errors = list(zip(*[_arms(ci) for ci in kept])) if kept else None
            ax.errorbar(steps, [ci["mean"] for ci in kept], yerr=errors, fmt="o-", capsize=3, label=name)
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set(xlabel="after step", ylabel="retention", xticks=range(1, T), title=f"retention ({metric})")
        ax.legend(fontsize=8)
    return _save(fig, path)


def _continual_tables(results: dict, costs: dict | None) -> list[str]:
    """Retention per arm and metric, the library's routing, the gate's decisions, and each arm's costs."""
    arms, metrics = results["arms"], list(results["metrics"])
    definitions = "; ".join(f"{m}: {about['retention']}" for m, about in results["metrics"].items())
    retention = [[name, *[format_ci(arm["metrics"][m]["retention"]) for m in metrics]] for name, arm in arms.items()]
    sections = [
        "Retention after the last step (95% interval over sequences): the passages learned before it, their score "
        f"at the end over their score right after each was learned (ratio of means over passages; {definitions}):"
        "\n\n" + markdown_table(["mitigation", *metrics], retention)
    ]
    if "library" in arms:
        route = arms["library"]["routing"]
        rows = [
            [
                name,
                f"{r['accuracy']:.3f}",
                f"{r['errors']}/{r['questions']}",
                " ".join(f"{a:.2f}" for a in r["accuracy_by_step"]),
            ]
            for name, r in route["routers"].items()
        ]
        sections.append(
            f"Library routing (answers by `{route['answered_by']}`, top-{route['top_k']}, keys: {route['keys']}): "
            "a question is routed right when its closest adapter is its own passage's.\n\n"
            + markdown_table(["router", "top-1 accuracy", "errors", "accuracy after each step"], rows)
        )
    if "gate" in arms:
        decisions = [d for seq in arms["gate"]["gate"] for d in seq[1:]]
        counts = ", ".join(f"{sum(d['decision'] == k for d in decisions)} {k}" for k in ("accept", "scale", "reject"))
        drops = [d["drops"]["1.0"] for d in decisions] or [float("nan")]
        sections.append(
            f"Gated merges after the first step: {counts}; the whole update's drop on the probe set: mean "
            f"{sum(drops) / len(drops):+.3f}, largest {max(drops):+.3f}."
        )
    if costs:
        rows = [
            [name, _fmt(c["train_seconds_per_step"], ".1f"), _fmt(c["answer_seconds_per_question"], ".3f"),
             f"{c['adapter_bytes']:,.0f}", str(c["adapters_kept"])]
            for name, c in costs["arms"].items()
        ]  # fmt: skip
        header = ["mitigation", "training s/step", "answer s/question", "bytes per adapter", "adapters kept"]
        sections.append(
            "Costs (wall times of this run; adapters kept: what answering needs beside the weights at the end):\n\n"
            + markdown_table(header, rows)
        )
    return sections


def continual_report(results: dict, out: Path) -> str:
    metric, arms, T = results["metric"], results["arms"], results["steps"]
    png = _forgetting_figure(arms, metric, T, out / "forgetting.png")
    figures = [f"![forgetting matrices ({metric})]({png})"]
    rows = [
        [name, _fmt(arm["just_learned"]), _fmt(arm["final_mean"]), f"{arm['forgetting']:+.3f}"]
        for name, arm in arms.items()
    ]
    matrices = []
    for name, arm in arms.items():
        body = [["before", *[_fmt(x) for x in results["before"]]]]
        body += [[str(t), *[_fmt(x) for x in row]] for t, row in enumerate(arm["matrix"])]
        matrices.append(f"**{name}** ({metric}, rows: after step t, columns: passage j)\n\n"
                        + markdown_table(["step", *map(str, range(T))], body))  # fmt: skip
    tables = []
    if "metrics" in results:  # results of runs since retention was measured
        others = [m for m in results["metrics"] if m != metric]
        figures += [f"![forgetting matrices ({m})]({_forgetting_figure(arms, m, T, out / f'forgetting_{m}.png')})"
                    for m in others]  # fmt: skip
        if T > 1:
            figures.append(
                f"![retention by step]({_retention_figure(arms, list(results['metrics']), T, out / 'retention.png')})"
            )
        costs_file = out.parent / "costs.json"
        tables = _continual_tables(results, json.loads(costs_file.read_text()) if costs_file.exists() else None)
    return "\n\n".join([
        f"# Continual self-edits: {results['model']}",
        f"{len(results['sequences'])} sequence(s) of {T} passages, each self-edit merged in turn; {metric} on every "
        f"earlier passage after every step, mean over sequences. Before any update: {results['before_mean']:.3f}.",
        markdown_table(["mitigation", "just learned (diagonal)", "after the last step", "forgetting"], rows),
        *tables,
        *matrices,
        *figures,
    ])  # fmt: skip


# --- ARC -----------------------------------------------------------------------------------------------


def _arc_rows(conditions: dict) -> list[list[str]]:
    return [
        [name, _rate_cell(c), f"{c['tasks_solved']:.1%}", str(c["pairs"]), str(c["invalid"]), *_choice_cells(c),
         _fmt(c["seconds_per_pair"], ".0f"), "; ".join(c["invalid_reasons"])[:120] or "-"]
        for name, c in conditions.items()
    ]  # fmt: skip


def _choice_cells(condition: dict) -> list[str]:
    chosen = condition.get("choices")
    if not chosen:
        return ["-", "-"]
    lrs = [_fmt(chosen[k], ".1e") for k in ("lr_median", "lr_median_solved", "lr_median_unsolved")]
    return [f"{lrs[0]} ({lrs[1]} / {lrs[2]})", _fmt(chosen["epochs_median"], "g")]


def _rate_cell(condition: dict) -> str:
    ci = condition.get("ci")
    if not ci:
        return f"{condition['success_rate']:.1%}"
    return f"{condition['success_rate']:.1%} [{ci['lo']:.1%}, {ci['hi']:.1%}]"


ARC_HEADER = [
    "condition",
    "success rate (pairs) [95% CI over tasks]",
    "tasks solved",
    "pairs",
    "invalid",
    "median lr (solved / not)",
    "median epochs",
    "s/pair",
    "invalid because",
]


def _per_task(conditions: dict) -> str:
    tasks = list(next(iter(conditions.values()))["per_task"])
    rows = [[t, *[f"{sum(c['per_task'][t])}/{len(c['per_task'][t])}" for c in conditions.values()]] for t in tasks]
    return markdown_table(["task", *conditions], rows)


def arc_eval_report(results: dict, out: Path) -> str:
    conditions = results["conditions"]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    errors = list(zip(*[_arms(c.get("ci")) for c in conditions.values()]))
    ax.bar(list(conditions), [c["success_rate"] for c in conditions.values()], yerr=errors, capsize=3, color="tab:blue")
    ax.set(ylabel="success rate", ylim=(0, 1), title=f"ARC, {results['n_tasks']} tasks")
    png = _save(fig, out / "success.png")
    return "\n\n".join([
        f"# ARC few-shot: {results['model']}",
        f"{results['n_tasks']} tasks. Success rate = solved (task, self-edit) pairs / all pairs.",
        markdown_table(ARC_HEADER, _arc_rows(conditions)),
        "Solved pairs per task:\n\n" + _per_task(conditions),
        _paired_table(results.get("paired", {}), ["success_rate"]),
        f"![success rate]({png})",
    ])  # fmt: skip


def arc_train_report(results: dict, out: Path) -> str:
    rounds = results["rounds"]
    fig, ax = plt.subplots(figsize=(6, 4))
    numbers = [r["round"] for r in rounds]
    held_out = [r["eval"]["self-edit"] for r in rounds]
    errors = list(zip(*[_arms(c.get("ci")) for c in held_out]))
    ax.errorbar(
        numbers, [c["success_rate"] for c in held_out], yerr=errors, fmt="o-", capsize=3, label="self-edit (held-out)"
    )
    trained = [r for r in rounds if "train" in r]
    ax.plot(
        [r["round"] for r in trained],
        [r["train"]["success_rate"] for r in trained],
        "s--",
        label="self-edit (training tasks)",
    )
    for name, style in (("in-context", ":"), ("oracle", "-.")):
        if name in rounds[0]["eval"]:
            ax.axhline(rounds[0]["eval"][name]["success_rate"], linestyle=style, color="grey", label=name)
    ax.set(xlabel="policy (RL round)", ylabel="success rate", xticks=numbers, ylim=(-0.02, 1), title="ARC")
    ax.legend(fontsize=8)
    png = _save(fig, out / "success_by_round.png")
    sections = [
        f"# ARC ReST-EM: {results['model']}",
        f"{results['n_train_tasks']} training tasks, {results['n_eval_tasks']} held-out tasks. Training rows: the "
        "round's sampled self-edits on the training tasks (the successful ones fine-tune the policy).",
    ]
    for r in rounds:
        conditions = {f"held-out {k}": v for k, v in r["eval"].items()}
        if "train" in r:
            conditions = {"training self-edits": r["train"], **conditions}
        extra = f"; policy fine-tuned on {r['train']['sft_examples']} self-edit(s)" if "train" in r else ""
        sections.append(f"## Policy {r['round']}{extra}\n\n" + markdown_table(ARC_HEADER, _arc_rows(conditions)))
    sections.append(_paired_table(results.get("paired", {}), ["success_rate"]))
    sections.append(f"![success by round]({png})")
    return "\n\n".join(sections)


def arc_select_report(results: dict, out: Path) -> str:
    split = {**{t: "train" for t in results["train"]}, **{t: "eval" for t in results["eval"]}}
    rows = [[task, f"{n}/{results['tries']}", split.get(task, "-")] for task, n in results["solved"].items()]
    return "\n\n".join([
        f"# ARC task selection: {results['model']}",
        f"{results['n_candidates']} candidate tasks, {results['tries']} oracle test-time trainings each; "
        f"{len(results['kept'])} kept ({len(results['train'])} training, {len(results['eval'])} evaluation). "
        "Chosen by the oracle, so the oracle is favoured on them.",
        markdown_table(["task", "solved", "split"], rows),
        "Files: " + ", ".join(f"`{p}`" for files in results["files"].values() for p in files.values()),
    ])  # fmt: skip


def arc_landscape_report(results: dict, out: Path) -> str:
    counts = results["tasks_per_family"]
    families = list(counts)
    header = ["configuration", "all [95% CI over tasks]", *(f"{f} ({n})" for f, n in counts.items())]

    def row(name: str, condition: dict) -> list[str]:
        return [name, _rate_cell(condition), *(f"{condition['per_family'][f]:.0%}" for f in families)]

    rows = [row(c["label"], c) for c in results["configs"]]
    rows.append(row("mean over the grid", results["grid_mean"]))
    if results["random"]:
        rows.append(row("random valid self-edits", results["random"]))
    best = results["best"]
    rows.append(["best configuration", "-", *(f"{best[f]['success_rate']:.0%}" for f in families)])
    rows.append([f"headroom over the {results['baseline']}", "-", *(f"{best[f]['headroom']:+.0%}" for f in families)])
    oracle = results["oracle"]
    return "\n\n".join([
        f"# ARC landscape: {results['model']}",
        f"{results['n_tasks']} tasks; success rate = solved (task, configuration) pairs / all pairs, per family "
        "(its tasks in brackets). The best configuration is chosen on these tasks, so its rate is optimistic here.",
        markdown_table(header, rows),
        "Best configuration per family: " + "; ".join(f"{f}: {best[f]['label']}" for f in families) + ".",
        f"Best over all tasks (the oracle to evaluate with): {oracle['label']} (oracle.families={oracle['families']}, "
        f"oracle.strategy={oracle['strategy']}, oracle.lr={oracle['lr']:g}, oracle.epochs={oracle['epochs']}).",
        _paired_table(results.get("paired", {}), ["success_rate"]),
    ])  # fmt: skip


REPORTS: dict[str, Callable[[dict, Path], str]] = {
    "seal.arc.landscape/1": arc_landscape_report,
    "seal.arc.select/1": arc_select_report,
    "seal.knowledge.train/1": train_report,
    "seal.knowledge.eval/1": eval_report,
    "seal.knowledge.continual/1": continual_report,
    "seal.knowledge.cpt/1": cpt_report,
    "seal.arc.eval/1": arc_eval_report,
    "seal.arc.train/1": arc_train_report,
}


def write_report(run: str | Path) -> Path:
    run = Path(run)
    path = run / "results.json"
    if not path.exists():
        raise ReportError(
            f"{run} has no results.json: the run is unfinished or not a run (re-run its command to finish it)"
        )
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ReportError(f"{path}: not valid JSON ({err})") from err
    writer = REPORTS.get(results.get("schema"))
    if writer is None:
        raise ReportError(f"{path}: unknown results schema {results.get('schema')!r}")
    out = run / REPORT_DIR
    out.mkdir(exist_ok=True)
    report = out / REPORT_FILE
    report.write_text(writer(results, out) + "\n")
    return report


def print_grade_check(console, check, source: str, examples: int) -> None:
    """`seal grade-check`'s tables: agreement measures, the confusion table, some disagreements."""
    from rich.table import Table

    result = check.agreement
    table = Table(title=f"{check.grader} vs {source} ({check.part}: {result.n} answers)")
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
    for row, said in check.disagreements[:examples]:
        answer = row.answer.strip().replace("\n", " / ")[:140]
        console.print(f"[dim]grader {'yes' if said else 'no'}, reference {'yes' if row.verdict else 'no'}:[/] "
                      f"gold={row.gold!r} answer={answer!r}")  # fmt: skip
