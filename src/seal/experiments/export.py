"""`seal export`: what a run learned, in forms other tools and commands read.

- the policy of a ReST-EM round merged into a plain Hugging Face model directory (config, weights,
  tokenizer) that `--model DIR` and `AutoModelForCausalLM.from_pretrained(DIR)` load: the paper's
  "SEAL" rows of the CPT and continual experiments start from such a model;
- a run's self-edits in the SEAL release's synthetic format (each passage with its `completions`),
  to evaluate them as a `file` condition or compare them across models.
"""

from __future__ import annotations

import json
from pathlib import Path

from seal.config import ArcTrainConfig, KnowledgeEvalConfig, KnowledgeTrainConfig, run_config
from seal.domains import knowledge
from seal.experiments.knowledge_steps import record_key, select_passages
from seal.experiments.rest_em import eval_phase
from seal.policy import PolicyOnDemand, policy_key
from seal.store import CONFIG_FILE, RunStore, atomic_directory, key

EXPORT_FILE = "seal_export.json"  # beside the exported model: where it came from


def export_policy(run: str | Path, out: str | Path, policy_round: int | None = None) -> Path:
    """The policy of `policy_round` (default: the last one recorded) of a ReST-EM run, merged and saved.

    Args:
        run: a `seal knowledge train` or `seal arc train` run directory.
        out: the model directory to write (written whole or not at all).
        policy_round: 0 is the model the run started from.
    Returns:
        `out`, holding config.json, the weights, the tokenizer and seal_export.json.
    """
    run, out = Path(run), Path(out)
    if out.exists() and any(out.iterdir()) and not (out / EXPORT_FILE).exists():
        raise ValueError(f"{out} exists and is not an exported model: choose another --out")
    cfg = run_config(run / CONFIG_FILE, [KnowledgeTrainConfig, ArcTrainConfig])
    with RunStore(run, cfg) as store:
        recorded = sorted(int(k[1:]) for k in store.keys("policy"))
        last = recorded[-1] if recorded else 0
        policy_round = last if policy_round is None else policy_round
        if policy_round not in [0, *recorded]:
            raise ValueError(f"{run}: no policy of round {policy_round} (rounds recorded: {recorded or 'none'})")
        source = PolicyOnDemand(cfg.model, store)
        source.use(policy_round)
        lm = source()
        with atomic_directory(out) as partial:
            lm.model.save_pretrained(partial)
            lm.tokenizer.save_pretrained(partial)
            adapters = [store.get("policy", policy_key(r))["adapter"] for r in range(1, policy_round + 1)]
            origin = {
                "run": str(run.resolve()),
                "round": policy_round,
                "base_model": cfg.model.name,
                "adapters": adapters,
            }
            (partial / EXPORT_FILE).write_text(json.dumps(origin, indent=2))
    return out


def export_self_edits(
    run: str | Path, out: str | Path, policy_round: int | None = None, condition: str | None = None
) -> int:
    """A knowledge run's self-edits on its evaluated passages, in the release's synthetic format.

    Args:
        run: a `seal knowledge train` run (the self-edits policy `policy_round`, default the last, wrote for the
            held-out passages) or a `seal knowledge eval` run (those of `condition`, default its first self-edit
            variant).
        out: the JSON file to write: a list of {title, context, questions, completions, prompt}.
    Returns:
        the number of passages written.
    """
    run = Path(run)
    cfg = run_config(run / CONFIG_FILE, [KnowledgeTrainConfig, KnowledgeEvalConfig])
    if isinstance(cfg, KnowledgeTrainConfig):
        passages = select_passages(cfg.eval_data, cfg.eval_passages, cfg.paper_subset)
        phase, k = key(eval_phase(cfg.rounds if policy_round is None else policy_round), cfg.variant), cfg.eval_k
    else:
        variants = [c for c in cfg.conditions if c in knowledge.VARIANTS]
        condition = condition or (variants[0] if variants else None)
        if condition not in variants:
            raise ValueError(f"{run}: no self-edit condition {condition!r} (its self-edit conditions: {variants})")
        passages, phase, k = select_passages(cfg.data, cfg.passages, cfg.paper_subset), condition, cfg.sampling.k
    with RunStore(run, cfg) as store:
        sampled = store.all("self_edits")
    rows = []
    for passage in passages:
        edits = [sampled.get(record_key(phase, passage, i)) for i in range(k)]
        if any(e is None for e in edits):
            raise ValueError(f"{run}: the self-edits of {phase} are not all written yet (is the run finished?)")
        rows.append({
            "title": passage.title,
            "context": passage.context,
            "questions": [{"question": q.question, "answer": q.answer} for q in passage.questions],
            "completions": [e["text"] for e in edits],
            "prompt": edits[0]["prompt"],
        })  # fmt: skip
    Path(out).write_text(json.dumps(rows, indent=2))
    return len(rows)
