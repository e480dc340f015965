"""What one training step of the engine costs: a fixed part and a part per packed token.

Trains K adapters (K = 1, 3, 8, 15 by default) for a few full steps on the same plans as
bench/inner_loop.py (one document per adapter per step, the paper's knowledge settings),
times each step (best of --repeats runs), and fits seconds per step = fixed + per_token x
tokens by least squares. A large fixed part means full steps pay (more slots, refill); a
large per-token part means training time follows the tokens trained whatever the steps
carry. With --objective distill the documents are distilled (`adapt.objective`): the time includes the
teacher's pass, and the table its tokens and the process's peak memory (GPU: per K). Prints a table and
writes JSON.

    python bench/step_cost.py
    python bench/step_cost.py --ks 1,5,15,30 --targets all
    python bench/step_cost.py --ks 4,8 --epochs 10 --objective distill   # against the same without --objective
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
import torch

from inner_loop import ROOT, build_jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ks", default="1,3,8,15")
    parser.add_argument("--steps", type=int, default=6, help="documents per adapter = full steps timed")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--targets", default="q_proj,v_proj", help="LoRA targets; 'all' = every projection")
    parser.add_argument("--objective", choices=["sft", "distill"], default="sft")
    parser.add_argument("--epochs", type=int, default=1, help="distill: the teacher's pass is shared by the epochs")
    parser.add_argument("--out", default=None, help="default: bench/results/step_cost[-distill].json")
    args = parser.parse_args()
    suffix = "" if args.objective == "sft" else f"-{args.objective}"
    out = Path(args.out or ROOT / "bench" / "results" / f"step_cost{suffix}.json")

    from rich.console import Console
    from rich.table import Table

    from seal.config import ALL_PROJECTIONS, AdaptConfig, LoraConfig
    from seal.engine.adapters import AdapterBank
    from seal.engine.training import TrainJob, train_adapters
    from seal.models import load_model

    ks = [int(k) for k in args.ks.split(",")]
    targets = ALL_PROJECTIONS if args.targets == "all" else args.targets.split(",")
    lm = load_model("embedded", dtype="auto")
    adapt = AdaptConfig(epochs=args.epochs, slots=max(ks), lora=LoraConfig(targets=targets), objective=args.objective)
    bank = AdapterBank.attach(lm.model, adapt.lora, max(ks))
    plans = build_jobs(lm, max(ks))
    rows = []
    for k in ks:
        # every adapter keeps `steps` documents, so every step is a full step of k documents
        jobs = [TrainJob(p.documents[: args.steps], p.seed) for p in plans[:k]]
        train_adapters(lm, bank, jobs, adapt)  # warm-up
        if lm.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            stats = train_adapters(lm, bank, jobs, adapt)
            best = min(best, time.perf_counter() - start)
        steps = max(len(losses) for losses in stats.losses)
        rows.append({
            "k": k, "tokens_per_step": stats.tokens / steps, "seconds_per_step": best / steps,
            "teacher_tokens_per_step": stats.teacher_tokens / steps, "peak_mib": peak_mib(lm.device),
        })  # fmt: skip
    per_token, fixed = np.polyfit(
        [r["tokens_per_step"] for r in rows], [r["seconds_per_step"] for r in rows], 1
    ).tolist()
    report = {
        "device": str(lm.device),
        "dtype": str(lm.dtype).replace("torch.", ""),
        "threads": torch.get_num_threads(),
        "objective": args.objective,
        "epochs": args.epochs,
        "lora_targets": targets,
        "rows": rows,
        "fit": {"fixed_seconds": fixed, "seconds_per_token": per_token},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))

    table = Table(title=f"engine step cost, {args.objective} ({report['device']}, {report['dtype']})")
    for column in ("K", "tokens / step", "teacher tokens / step", "s / step", "tokens / s", "fit s / step", "MiB"):
        table.add_column(column, justify="right")
    for r in rows:
        fitted = fixed + per_token * r["tokens_per_step"]
        table.add_row(
            str(r["k"]), f"{r['tokens_per_step']:.0f}", f"{r['teacher_tokens_per_step']:.0f}",
            f"{r['seconds_per_step']:.3f}", f"{r['tokens_per_step'] / r['seconds_per_step']:.0f}", f"{fitted:.3f}",
            f"{r['peak_mib']:.0f}",
        )  # fmt: skip
    Console(width=140).print(table)
    print(f"step = {fixed:.3f} s + {1000 * per_token:.2f} ms x packed tokens; wrote {out}")


def peak_mib(device: torch.device) -> float:
    """The peak memory so far: the GPU's allocations since the last reset, else the process's resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
