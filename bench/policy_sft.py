"""ReST-EM M-step: TRL's SFTTrainer with peft vs seal's plain loop, on the same examples and settings.

The examples are (self-edit prompt, implications) pairs from the SEAL release's SQuAD-train
synthetic data; both fine-tune a fresh LoRA (the paper's policy settings: r=64, alpha=128,
all linear layers, lr 3e-4, 2 epochs, batch 10 as micro-batches of 2 with gradient
accumulation, loss on the completion only) on the embedded model in bf16, each in its own
process. Prints a table and writes JSON.

    pip install trl            # only this benchmark needs it
    python bench/policy_sft.py --examples 40
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SEAL_SHARED_DATA", ROOT.parent / "shared" / "data"))
DATA = SHARED / "squad" / "synthetic" / "train" / "iter0_train.json"


def examples(n: int) -> list[tuple[str, str]]:
    from seal.domains.knowledge import load_passages, self_edit_prompt

    return [(self_edit_prompt(p, "implications"), p.completions[0]) for p in load_passages(DATA)[:n]]


def run_one(mode: str, n: int, model: str = "embedded", tiny: bool = False, epochs: int = 2) -> dict:
    """One fine-tune of a fresh policy LoRA on n examples; `model` a known shape with random weights
    (`seal.engine.shapes`, `tiny`: scaled down to a smoke test) or the embedded model."""
    from seal.config import PolicyConfig
    from seal.models import load_model

    cfg = PolicyConfig(micro_batch_size=2, epochs=epochs)
    if model == "embedded":
        lm = load_model("embedded")
    else:
        from inner_loop import TINY
        from seal.engine.shapes import RandomModelSource

        lm = RandomModelSource(model, **(TINY if tiny else {}))()
    pairs = examples(n)
    began = time.perf_counter()
    if mode == "plain":
        from seal.policy import sft_adapter_files

        _, losses = sft_adapter_files(lm, pairs, cfg, seed=0)
    else:
        from datasets import Dataset
        from peft import LoraConfig
        from trl import SFTConfig, SFTTrainer

        data = Dataset.from_list(
            [
                {"prompt": [{"role": "user", "content": p}], "completion": [{"role": "assistant", "content": c}]}
                for p, c in pairs
            ]
        )
        args = SFTConfig(
            output_dir=str(ROOT / "bench" / "results" / "trl-sft"),
            per_device_train_batch_size=cfg.micro_batch_size,
            gradient_accumulation_steps=cfg.batch_size // cfg.micro_batch_size,
            learning_rate=cfg.lr,
            num_train_epochs=cfg.epochs,
            lr_scheduler_type="linear",
            max_grad_norm=cfg.max_grad_norm,
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            bf16=True,
            use_cpu=True,
            seed=0,
            max_length=cfg.max_tokens,
        )
        peft_cfg = LoraConfig(
            r=cfg.lora.rank, lora_alpha=cfg.lora.alpha, target_modules=cfg.lora.targets, task_type="CAUSAL_LM"
        )
        trainer = SFTTrainer(
            model=lm.model, args=args, train_dataset=data, processing_class=lm.tokenizer, peft_config=peft_cfg
        )
        trainer.train()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    seconds = time.perf_counter() - began
    return {
        "mode": mode,
        "examples": n,
        "seconds": seconds,
        "steps": len(losses),
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--model", default="embedded", help="embedded, or a known shape with random weights")
    parser.add_argument("--tiny", action="store_true", help="the --model shape at one layer of width 64 (smoke)")
    parser.add_argument("--modes", default="plain,trl", help="plain (seal's loop), trl (needs pip install trl)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "policy_sft.json"))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.examples, args.model, args.tiny, args.epochs)))
        return
    from rich.console import Console
    from rich.table import Table

    rows = []
    for mode in args.modes.split(","):
        command = [sys.executable, __file__, "--one", mode, "--examples", str(args.examples), "--epochs",
                   str(args.epochs), "--model", args.model, *(["--tiny"] if args.tiny else [])]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"{mode} failed:\n{done.stderr[-4000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))
    table = Table(title=f"policy fine-tuning, {args.model}, {args.examples} examples, {args.epochs} epochs, batch 10")
    for column in ("loop", "seconds", "optimiser steps", "loss first", "loss last", "peak RSS GiB"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            r["mode"],
            f"{r['seconds']:.1f}",
            str(r["steps"]),
            f"{r['loss_first']:.3f}",
            f"{r['loss_last']:.3f}",
            f"{r['peak_rss_gib']:.1f}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
