"""Inner-loop benchmark: self-edit evaluations per minute, the straightforward way vs the batched engine.

Both evaluate the same plans (SQuAD evaluation passages + GPT-4.1's implications from the
SEAL release, the paper's knowledge-incorporation settings: LoRA r=32/alpha=64 on q_proj and
v_proj, 10 epochs, lr 1e-3, one document per step, greedy 64-token answers):

- baseline: a fresh peft adapter per self-edit, plain loop at batch 1 in float32, answers
  generated per self-edit (`adapt.engine: peft`);
- engine: K adapters trained together in packed batches, bf16 where the hardware has it,
  K adapted models answered in one batched pass (`adapt.engine: batched`, slots=K); with
  refill R a slot whose plan is trained takes the next of a unit of K x R plans at once
  (refill 1: K plans at a time, each group as long as its longest plan); with W workers
  (`executor.kind: processes`) the units are shared among W processes that split this
  machine's threads, each holding the model once.

The engine evaluates `--plans` self-edits cut into units as a ReST-EM round cuts them
(plans of similar length together: a round is hundreds of self-edits, not K). Configurations
that take one self-edit at a time (the baseline, K=1) evaluate a stratified sample of the
same plans (evenly spaced by training tokens), so every row's plans cost about the same; the
table gives each row's training tokens per self-edit and the speed-up per training token too.

Each configuration runs in its own process, so its peak memory is its own (with workers: the
driver's plus every worker's). Where CUDA is present the models run on the GPU, the matmul
peaks are the GPU's, and the table adds each configuration's peak GPU memory. Prints a table
and writes JSON.

    python bench/inner_loop.py                      # K = 1, 5, 15 over 30 plans, in-process and on 2 workers;
                                                    # baseline and K=1 on 6 of them
    python bench/inner_loop.py --ks 15 --workers 2 --plans 60  # a longer queue: less idle time at its end
    python bench/inner_loop.py --refills 1,4        # and each K > 1 with slots refilled from units of 4K plans
    python bench/inner_loop.py --ks 5 --refills 4 --plans 10 --sample 2 --epochs 2  # quicker
    python bench/inner_loop.py --targets all        # LoRA on every projection (our default for eval runs)
    python bench/inner_loop.py --model qwen2.5-7b --ks 1,15,auto --workers 1 --compile
                                                    # a paper-scale shape with random weights (no download);
                                                    # auto: the K the memory planner picks; --compile: each
                                                    # engine row again with adapt.compile, in the same run

`--model` names the embedded SmolLM2 or a known shape (`seal.engine.shapes.SHAPES`: llama-3.2-1b,
qwen2.5-7b, llama-3.1-8b, ...) built from its public config with random weights and the embedded
tokenizer's vocabulary; `--tiny` scales such a shape down to one layer of width 64 (a smoke test of
the code path, not a measurement).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SEAL_SHARED_DATA", ROOT.parent / "shared" / "data")) / "squad"
# a known shape scaled down to a smoke test of the code path (--tiny)
TINY = {"num_hidden_layers": 1, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4}
TINY |= {"num_key_value_heads": 2}


def matmul_peak(dtype: torch.dtype, device: str, seconds: float = 3.0) -> float:
    """Best achieved GFLOP/s of an n x n matmul in `dtype` on the device the models run on, now
    (n = 2048 saturates a CPU; a GPU needs 8192 and a synchronised clock)."""
    n = 8192 if device.startswith("cuda") else 2048
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)

    def timed() -> float:
        start = time.perf_counter()
        a @ b
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for _ in range(3):
        timed()
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        best = max(best, 2 * n**3 / timed() / 1e9)
    return best


def build_jobs(lm, count: int):
    from seal.domains import knowledge
    from seal.engine.loop import AdaptJob
    from seal.experiments.knowledge_steps import probes_for, training_documents

    passages = knowledge.paper_subset(knowledge.load_passages(DATA / "squad_val.json"), 200)
    edits = {
        (p.title, p.context): p.completions for p in knowledge.load_passages(DATA / "synthetic/eval/gpt4_1_val.json")
    }
    jobs = []
    for i, passage in enumerate(passages[:count]):
        plan = knowledge.plan(passage, edits[(passage.title, passage.context)][0], "implications")
        jobs.append(AdaptJob(f"bench/{i}", training_documents(plan), probes_for(lm, passage), seed=i))
    return jobs


def stratified(jobs: list, sizes: list[int], n: int) -> list:
    """n of the jobs evenly spaced in order of size, so their mean cost is close to all of them."""
    order = sorted(range(len(jobs)), key=lambda i: sizes[i])
    return [jobs[order[round(i * (len(jobs) - 1) / max(n - 1, 1))]] for i in range(n)]


def adapt_timed(lm, batch: list, adapt, answer) -> dict:
    """`loop.adapt_batch` (the real code path), with its scoring timed and its packed training
    tokens counted on the way, for the FLOP accounting of the training phase (training time =
    total - scoring). A module-level function: worker processes run it too."""
    from seal.engine import loop
    from seal.experiments.qa import QuestionScorer

    spent = {"scoring": 0.0, "tokens": 0}
    scorer, train_adapters = QuestionScorer(answer), loop.train_adapters

    def timed_score(*a, **kw):
        start = time.perf_counter()
        out = scorer(*a, **kw)
        spent["scoring"] += time.perf_counter() - start
        return out

    def counted_train(*a, **kw):
        stats = train_adapters(*a, **kw)
        spent["tokens"] += stats.tokens
        return stats

    loop.train_adapters = counted_train
    try:
        loop.adapt_batch(lm, batch, adapt, timed_score)
    finally:
        loop.train_adapters = train_adapters
    return spent


def worker_facts(lm, _item) -> dict:
    """What the process holding the model measured: its peak memory, the model's dtype and the
    training FLOPs of a packed token through its adapter bank (none for the peft baseline)."""
    from seal.engine.adapters import AdapterBank

    bank = AdapterBank.installed(lm.model)
    plans = lm.model.__dict__.get("_seal_slot_plans", {})
    return {
        "slot_plan": next((plan.summary() for plan in plans.values()), None),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
        "train_flops_per_token": bank.train_flops_per_token() if bank is not None else None,
        "dtype": str(lm.dtype).replace("torch.", ""),
    }


def model_source(args: argparse.Namespace, dtype: str):
    """What the configurations run on: the embedded model, or a known shape with random weights."""
    from seal.config import ModelConfig
    from seal.engine.shapes import RandomModelSource
    from seal.models import ModelOnDemand

    if args.model == "embedded":
        return ModelOnDemand(ModelConfig(name="embedded", dtype=dtype))
    return RandomModelSource(args.model, dtype, **(TINY if args.tiny else {}))


def run_one(
    mode: str, k: int | str, refill: int, workers: int, compiled: bool, args: argparse.Namespace, targets: list[str]
) -> dict:
    """One configuration, in this process (workers = 1) or on worker processes that split this
    machine's threads (`executor.kind: processes`); k may be "auto" (the memory planner's K)."""
    from seal.cluster import make_executor
    from seal.config import AdaptConfig, AnswerConfig, ExecutorConfig, LoraConfig
    from seal.engine import loop
    from seal.engine.training import tokenize_documents
    from seal.experiments.steps import resolve_slots

    baseline = mode == "baseline"
    model = model_source(args, "float32" if baseline else "auto")
    threads = max(1, torch.get_num_threads() // workers)
    executor = make_executor(
        ExecutorConfig(kind="processes" if workers > 1 else "local", workers=workers, cpus_per_worker=threads), model
    )
    lm = executor.tokenizer_view()
    adapt = AdaptConfig(
        epochs=args.epochs,
        slots=k,
        refill=refill,
        engine="peft" if baseline else "batched",
        lora=LoraConfig(targets=targets),
        compile=compiled,
        max_auto_slots=args.max_auto_slots,
    )
    answer = AnswerConfig(max_new_tokens=args.answer_tokens)
    jobs = build_jobs(lm, args.plans)
    size = {j.key: args.epochs * sum(len(ids) for ids, _ in tokenize_documents(lm, j.documents, adapt)) for j in jobs}
    executor.start()  # models loaded (and slots planned) before the clock starts, as for every row
    adapt = resolve_slots(executor, adapt)
    if adapt.slots < args.sample_below:  # one self-edit at a time: a stratified sample of the same plans
        jobs = stratified(jobs, [size[j.key] for j in jobs], args.sample)
    train_tokens = sum(size[j.key] for j in jobs)
    began = time.perf_counter()
    spent = [s for _, s in executor.map(adapt_timed, loop.work_batches(jobs, adapt), adapt, answer)]
    total = time.perf_counter() - began
    facts = [
        f for _, f in executor.map(worker_facts, list(range(workers)))
    ]  # one item per worker: all idle, each takes one
    executor.close()
    scoring, tokens = sum(s["scoring"] for s in spent), sum(s["tokens"] for s in spent)
    train_s = total - scoring / workers  # workers score side by side
    peak = sum(f["peak_rss_gib"] for f in facts) + (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20 if workers > 1 else 0
    )
    result = {
        "mode": mode,
        "k": 1 if baseline else adapt.slots,
        "planned": k == "auto",
        "slot_plan": facts[0]["slot_plan"],
        "compile": compiled,
        "refill": None if baseline else refill,
        "workers": workers,
        "threads_per_worker": threads,
        "self_edits": len(jobs),
        "dtype": facts[0]["dtype"],
        "seconds": total,
        "seconds_per_self_edit": total / len(jobs),
        "self_edits_per_minute": 60 * len(jobs) / total,
        "train_tokens_per_self_edit": train_tokens / len(jobs),
        "seconds_per_1k_train_tokens": 1000 * total / train_tokens,
        "peak_rss_gib": peak,
    }
    if facts[0]["peak_gpu_gib"] is not None:  # each worker's models and batches on the GPU, all of them together
        result["peak_gpu_gib"] = sum(f["peak_gpu_gib"] for f in facts)
    if tokens:
        per_token = next(
            f["train_flops_per_token"] for f in facts if f["train_flops_per_token"]
        )  # a worker that trained
        gflops = per_token * tokens / train_s / 1e9
        result |= {"train_seconds": train_s, "train_tokens": tokens, "train_gflops": gflops}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ks", default="1,5,15", help="engine slots K; auto: as the memory planner picks")
    parser.add_argument("--model", default="embedded", help="embedded, or a known shape with random weights")
    parser.add_argument("--tiny", action="store_true", help="the --model shape at one layer of width 64 (smoke)")
    parser.add_argument("--compile", action="store_true", help="each engine row again with adapt.compile")
    parser.add_argument("--max-auto-slots", type=int, default=64, help="the most slots K=auto may pick")
    parser.add_argument("--answer-tokens", type=int, default=64, help="greedy answer length (paper: 64)")
    parser.add_argument("--peak-seconds", type=float, default=3.0, help="time spent measuring each matmul peak")
    parser.add_argument("--refills", default="1", help="engine units of K x refill plans, e.g. 1,4 (1: K at a time)")
    parser.add_argument(
        "--workers", default="1,2", help="engine worker processes, splitting this machine's threads, e.g. 1,2"
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument(
        "--plans", type=int, default=30, help="self-edits evaluated (cut into batches of K as a round cuts them)"
    )
    parser.add_argument(
        "--sample", type=int, default=6, help="configurations below --sample-below K evaluate this stratified sample"
    )
    parser.add_argument("--sample-below", type=int, default=2)
    parser.add_argument(
        "--targets", default="q_proj,v_proj", help="LoRA targets (paper: q_proj,v_proj); 'all' = every projection"
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "inner_loop.json"))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one configuration, print JSON
    args = parser.parse_args()
    from seal.config import ALL_PROJECTIONS

    targets = ALL_PROJECTIONS if args.targets == "all" else args.targets.split(",")
    if args.one:
        mode, k, refill, workers, compiled = args.one.split(":")
        k = k if k == "auto" else int(k)
        print(json.dumps(run_one(mode, k, int(refill), int(workers), compiled == "1", args, targets)))
        return

    from seal.models import default_device, fast_bf16_available

    device = default_device()  # where load_model puts the models, so the peaks are of the same hardware
    peaks = {"float32": matmul_peak(torch.float32, device, args.peak_seconds)}
    if fast_bf16_available(device):
        peaks["bfloat16"] = matmul_peak(torch.bfloat16, device, args.peak_seconds)
    ks, refills = [k if k == "auto" else int(k) for k in args.ks.split(",")], [int(r) for r in args.refills.split(",")]
    # a random-weight model is built in this process only (worker processes load a model by name)
    workers = [int(w) for w in args.workers.split(",")] if args.model == "embedded" else [1]
    # refill makes no difference at K=1 (one plan at a time either way)
    configs = ["baseline:1:1:1:0"] + [
        f"engine:{k}:{r}:{w}:{c}"
        for c in ((0, 1) if args.compile else (0,))
        for w in workers
        for k in ks
        for r in (refills if k != 1 else refills[:1])
        if k != 1 or w == 1
    ]
    report = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "device": device,
            "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None,
        },
        "model": args.model,
        "tiny": args.tiny,
        "settings": {
            "epochs": args.epochs,
            "plans": args.plans,
            "sample": args.sample,
            "sample_below_k": args.sample_below,
            "lora_rank": 32,
            "lora_alpha": 64,
            "lora_targets": targets,
            "lr": 1e-3,
            "answer_tokens": args.answer_tokens,
        },
        "matmul_peak_gflops": peaks,
    }
    rows = []
    for config in configs:
        command = [
            sys.executable,
            __file__,
            "--one",
            config,
            "--epochs",
            str(args.epochs),
            "--plans",
            str(args.plans),
            "--sample",
            str(args.sample),
            "--sample-below",
            str(args.sample_below),
            "--targets",
            ",".join(targets),
            "--model",
            args.model,
            "--max-auto-slots",
            str(args.max_auto_slots),
            "--answer-tokens",
            str(args.answer_tokens),
            *(["--tiny"] if args.tiny else []),
        ]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"{config} failed:\n{done.stderr[-4000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{config}: {rows[-1]['seconds_per_self_edit']:.1f} s per self-edit", file=sys.stderr)
        write_report(args, report | {"rows": rows})  # what is done survives a run cut short
    base = rows[0]
    for row in rows:
        row["speedup"] = row["self_edits_per_minute"] / base["self_edits_per_minute"]
        row["speedup_per_token"] = base["seconds_per_1k_train_tokens"] / row["seconds_per_1k_train_tokens"]
        if "train_gflops" in row:
            row["train_fraction_of_peak"] = row["train_gflops"] / peaks[row["dtype"]]
    report |= {"rows": rows}
    write_report(args, report)
    print_table(args, peaks, rows)


def write_report(args: argparse.Namespace, report: dict) -> None:
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))


def print_table(args: argparse.Namespace, peaks: dict, rows: list[dict]) -> None:
    """The rows as a table on stdout."""
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"inner loop, {args.model}{' (tiny)' if args.tiny else ''}, {args.epochs} epochs (matmul peak: "
        + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items())
        + ")"
    )
    columns = (
        "config",
        "dtype",
        "self-edits",
        "train tokens/edit",
        "s/self-edit",
        "self-edits/min",
        "speed-up",
        "per token",
        "train GFLOP/s",
        "of peak",
        "peak RSS GiB",
    )
    gpu = "peak_gpu_gib" in rows[0]
    columns += ("peak GPU GiB",) if gpu else ()
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            f"{row['mode']} K={row['k']}"
            + (" (planned)" if row["planned"] else "")
            + (" compiled" if row["compile"] else "")
            + (f" refill {row['refill']}" if row["mode"] == "engine" and row["k"] > 1 else "")
            + (f" x{row['workers']} workers" if row["workers"] > 1 else ""),
            row["dtype"],
            str(row["self_edits"]),
            f"{row['train_tokens_per_self_edit']:.0f}",
            f"{row['seconds_per_self_edit']:.1f}",
            f"{row['self_edits_per_minute']:.2f}",
            f"{row['speedup']:.2f}x",
            f"{row['speedup_per_token']:.2f}x",
            f"{row.get('train_gflops', float('nan')):.0f}",
            f"{row.get('train_fraction_of_peak', float('nan')):.0%}",
            f"{row['peak_rss_gib']:.1f}",
            *([f"{row['peak_gpu_gib']:.1f}"] if gpu else []),
        )
    Console(width=200).print(table)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
