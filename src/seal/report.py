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
import matplotlib.pyplot as plt  # noqa: E402

REPORT_DIR = "report"
REPORT_FILE = "report.md"


class ReportError(ValueError):
    pass


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
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


# --- ReST-EM runs ----------------------------------------------------------------------------------


def train_report(results: dict, out: Path) -> str:
    reward, variant, rounds = results["reward"], results["variant"], results["rounds"]
    numbers = [r["round"] for r in rounds]
    trained = [r for r in rounds if "train" in r]

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(numbers, [r["eval"][variant]["macro"][reward] for r in rounds], "o-", label=f"self-edit ({variant})")
    ax.plot(numbers, [r["eval"]["base"]["macro"][reward] for r in rounds], "s--", label="closed-book, no adaptation")
    for name, style in (("in-context", ":"), ("passage", "-.")):
        if name in rounds[0]["eval"]:
            ax.axhline(rounds[0]["eval"][name]["macro"][reward], linestyle=style, color="grey", label=f"{name} (policy 0)")
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
              "eval closed-book", f"eval {variant}", "eval gain", "words/self-edit", "seconds"]  # fmt: skip
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
            _fmt(ev[variant]["macro"][reward]),
            f"{ev[variant]['gain']:+.3f}",
            f"{r['eval_self_edit_words']:.0f}",
            f"{(t['seconds'] if t else 0) + (r['eval_seconds'] or 0):.0f}",
        ])  # fmt: skip
    baselines = [[name, _fmt(rounds[0]["eval"][name]["macro"][reward])] for name in ("in-context", "passage") if name in rounds[0]["eval"]]
    return "\n\n".join([
        f"# ReST-EM: {results['model']}",
        f"{results['n_train_passages']} training passages, {results['n_eval_passages']} held-out passages "
        f"({results['n_eval_questions']} questions); reward: {reward}; self-edit prompt: {variant}. "
        "Round 0 is the initial policy (no training); train columns describe the round that produced the policy.",
        _markdown_table(header, rows),
        "Baselines with the initial policy:\n\n" + _markdown_table(["condition", reward], baselines) if baselines else "",
        f"![held-out evaluation by round]({accuracy_png})",
        f"![reward and self-edit length by round]({distributions_png})",
    ])  # fmt: skip


# --- single-passage evaluation runs -----------------------------------------------------------------


def eval_report(results: dict, out: Path) -> str:
    conditions = results["conditions"]
    metrics = list(next(iter(conditions.values()))["macro"])
    names = list(conditions)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.6))
    for ax, metric in zip(axes, metrics):
        ax.bar(names, [conditions[c]["macro"][metric] for c in names], color="tab:blue")
        ax.set_title(metric)
        ax.tick_params(axis="x", rotation=60, labelsize=7)
    png = _save(fig, out / "conditions.png")
    rows = [
        [name, *[_fmt(row["macro"][m]) for m in metrics], f"{row['gain']:+.3f}", str(row["n_self_edits"] or "-"),
         _fmt(row["seconds_per_self_edit"], ".1f")]
        for name, row in conditions.items()
    ]  # fmt: skip
    return "\n\n".join([
        f"# Knowledge incorporation: {results['model']}",
        f"{results['n_passages']} passages, {results['n_questions']} questions; macro-averages over passages.",
        _markdown_table(["condition", *metrics, f"gain ({results['reward']})", "self-edits", "s/self-edit"], rows),
        f"![conditions]({png})",
    ])  # fmt: skip


REPORTS: dict[str, Callable[[dict, Path], str]] = {
    "seal.knowledge.train/1": train_report,
    "seal.knowledge.eval/1": eval_report,
}


def write_report(run: str | Path) -> Path:
    run = Path(run)
    path = run / "results.json"
    if not path.exists():
        raise ReportError(f"{run} has no results.json: the run is unfinished or not a run (re-run its command to finish it)")
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
