"""Grammar-constrained ARC self-edits: llguidance vs xgrammar vs outlines(-core) vs lm-format-enforcer.

Each library that is installed is measured on the embedded model's tokenizer (SmolLM2, 49k
tokens) with the same two languages:

- regex: `seal.domains.arc.grammar.arc_self_edit_regex()` (bounded, exactly the parse rules);
- schema: `seal.domains.arc.grammar.arc_self_edit_schema()` compiled by the library's own JSON-schema
  support, compact (`plan_json`'s ", " and ": ", or at most one space where a library has
  no separator setting).

and reports: the tokenizer set-up and grammar compile times; the per-step cost of the
constraint alone for a batch of 8 (replaying 8 fixed self-edits through its logits
processor, no model); then on the embedded model a batch of 8 ARC self-edit prompts (4
tasks x 2, chat template, left-padded) with 128 new tokens, greedy and sampled at
temperature 1: seconds, steps, and how many texts `parse_self_edit` accepts. All backends
share one logits processor (`Processor` below, the same logic as seal.engine.structured's) so that
only the libraries differ; llguidance runs through seal.engine.structured itself.

    pip install llguidance xgrammar outlines lm-format-enforcer   # see the notes in the report
    python bench/structured.py --out bench/structured.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from transformers import LogitsProcessor

from seal.domains.arc.grammar import arc_self_edit_regex, arc_self_edit_schema
from seal.domains.arc.grids import load_tasks
from seal.domains.arc.selfedit import ArcPlan, parse_self_edit, plan_json, self_edit_prompt
from seal.engine.sampling import generate
from seal.engine.structured import _unpack
from seal.models import load_model

ROOT = Path(__file__).resolve().parents[1]

TASKS = ROOT.parent / "shared" / "data" / "arc" / "arc-agi_evaluation_challenges_filtered_1B_eval_set.json"
REPLAY = [  # decimal learning rates: every language here has them
    plan_json(("basic",), "output", 1e-4, 2),
    plan_json(("basic", "size"), "all", 0.001, 3),
    plan_json((), "output", 0.0005, 1),
    plan_json(("chain", "repeat"), "all", 0.01, 10),
    plan_json(("basic", "size", "chain", "repeat"), "output", 0.00025, 5),
    plan_json(("size",), "all", 0.003, 7),
    plan_json(("repeat",), "output", 0.0002, 4),
    plan_json(("basic", "chain"), "all", 0.0001, 8),
]


def parse(text: str) -> ArcPlan:
    """parse_self_edit, which raises TypeError where "data_generation" or "training" is not an object
    (the embedded model writes {"data_generation": true, ...} unconstrained): counted as invalid."""
    try:
        return parse_self_edit(text)
    except TypeError as err:
        return ArcPlan(valid=False, reason=f"parse_self_edit raised TypeError: {err}")


class Processor(LogitsProcessor):
    """One row state per row; forced text takes its own first token; finished rows take EOS."""

    def __init__(self, backend):
        self.backend, self.rows, self.done = backend, None, []

    def __call__(self, input_ids, scores):
        batch, eos = scores.shape[0], self.backend.eos
        if self.rows is None:
            self.rows, self.done = self.backend.new_rows(batch), [False] * batch
        else:
            for i, token in enumerate(input_ids[:, -1].tolist()):
                if self.done[i]:
                    continue
                if token == eos or self.rows[i].stopped():
                    self.done[i] = True
                elif not self.rows[i].consume(token):
                    raise RuntimeError(f"row {i} left its grammar at token {token}")
        bitmask = np.zeros((batch, self.backend.words), dtype=np.int32)
        forced = {}
        for i, row in enumerate(self.rows):
            if not self.done[i]:
                token = row.forced() if self.backend.force else None
                if token is None:
                    row.fill(bitmask, i)
                else:
                    forced[i] = token
        allowed = _unpack(bitmask, scores.shape[1])
        for i in range(batch):
            if self.done[i] or i in forced:
                allowed[i] = False
                allowed[i, forced.get(i, eos)] = True
        return scores.masked_fill(~allowed, float("-inf"))


class Backend:
    force = True

    def logits_processor(self):
        return Processor(self)

    def new_rows(self, batch):
        return [self.new_row() for _ in range(batch)]


# --- xgrammar -----------------------------------------------------------------------------------


class XgrammarRow:
    def __init__(self, backend):
        import xgrammar as xgr

        self.b, self.m = backend, xgr.GrammarMatcher(backend.compiled)

    def consume(self, t):
        return self.m.accept_token(t)

    def fill(self, bitmask, i):
        self.m.fill_next_token_bitmask(torch.from_numpy(bitmask), i)

    def forced(self):
        text = self.m.find_jump_forward_string()
        ids = self.b.tok(text, add_special_tokens=False).input_ids if text else []
        return ids[0] if len(ids) > 1 else None  # the last token of the forced text may join what follows

    def stopped(self):
        return self.m.is_terminated()


class Xgrammar(Backend):
    name = "xgrammar"

    def __init__(self, tok, kind):
        import xgrammar as xgr

        self.tok, self.eos, self.words = tok, tok.eos_token_id, (len(tok) + 31) // 32
        t = time.perf_counter()
        info = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=len(tok))
        compiler = xgr.GrammarCompiler(info)
        self.setup_s = time.perf_counter() - t
        t = time.perf_counter()
        if kind == "regex":
            self.compiled = compiler.compile_regex(arc_self_edit_regex())
        else:
            self.compiled = compiler.compile_json_schema(
                arc_self_edit_schema(), any_whitespace=False, separators=(", ", ": ")
            )
        self.compile_s = time.perf_counter() - t

    def new_row(self):
        return XgrammarRow(self)


# --- outlines-core (what outlines' transformers backend runs) -----------------------------------


class OutlinesRow:
    def __init__(self, backend):
        from outlines_core import Guide

        self.g = Guide(backend.index)

    def consume(self, t):
        try:
            self.g.advance(token_id=t, return_tokens=False)
            return True
        except Exception:
            return False

    def fill(self, bitmask, i):
        row = bitmask[i]
        self.g.write_mask_into(row.ctypes.data, row.size, row.itemsize)

    def forced(self):
        return None  # no jump-forward in outlines-core

    def stopped(self):
        return self.g.is_finished()


class Outlines(Backend):
    name = "outlines"
    force = False

    def __init__(self, tok, kind):
        from outlines_core import Index, Vocabulary
        from outlines_core.json_schema import build_regex_from_schema

        self.tok, self.eos, self.words = tok, tok.eos_token_id, (len(tok) + 31) // 32
        t = time.perf_counter()
        vocab: dict[str, list[int]] = {}
        for token, i in tok.get_vocab().items():  # as outlines.backends.outlines_core builds it
            vocab.setdefault(tok.convert_tokens_to_string([token]), []).append(i)
        vocab.pop(tok.convert_tokens_to_string([tok.eos_token]), None)
        self.vocabulary = Vocabulary(self.eos, vocab)
        self.setup_s = time.perf_counter() - t
        t = time.perf_counter()
        if kind == "regex":
            regex = arc_self_edit_regex()
        else:
            regex = build_regex_from_schema(json.dumps(arc_self_edit_schema()), whitespace_pattern=" ?")
        self.index = Index(regex, self.vocabulary)
        self.compile_s = time.perf_counter() - t

    def new_row(self):
        return OutlinesRow(self)


# --- lm-format-enforcer -------------------------------------------------------------------------


class LmfeRow:
    def __init__(self, backend, enforcer):
        self.b, self.enforcer, self.tokens = backend, enforcer, []

    def consume(self, t):
        self.tokens.append(t)
        return True

    def fill(self, bitmask, i):
        allowed = np.zeros(self.b.words * 32, dtype=bool)
        allowed[self.enforcer.get_allowed_tokens(self.tokens).allowed_tokens] = True
        bitmask[i] = np.packbits(allowed, bitorder="little").view(np.int32)

    def forced(self):
        return None

    def stopped(self):
        return False


class Lmfe(Backend):
    name = "lm-format-enforcer"
    force = False

    def __init__(self, tok, kind):
        from lmformatenforcer import (
            CharacterLevelParserConfig,
            JsonSchemaParser,
            RegexParser,
            TokenEnforcerTokenizerData,
        )

        self.tok, self.eos, self.words = tok, tok.eos_token_id, (len(tok) + 31) // 32
        t = time.perf_counter()
        # lmformatenforcer.integrations.transformers does not import under transformers 5
        # (transformers.tokenization_utils.PreTrainedTokenizerBase moved): its tokenizer data, by hand
        token_0 = tok.encode("0", add_special_tokens=False)[-1]
        special = set(tok.all_special_ids)
        regular = []
        for i in range(len(tok)):
            if i in special:
                continue
            after_0 = tok.decode([token_0, i])[1:]
            regular.append((i, after_0, len(after_0) > len(tok.decode([i]))))
        self.data = TokenEnforcerTokenizerData(
            regular, lambda ids: tok.decode(ids).rstrip("\ufffd"), self.eos, False, len(tok)
        )
        self.setup_s = time.perf_counter() - t
        t = time.perf_counter()
        if kind == "regex":
            self.parser = RegexParser(arc_self_edit_regex())
        else:
            self.parser = JsonSchemaParser(
                arc_self_edit_schema(), CharacterLevelParserConfig(max_consecutive_whitespaces=1)
            )
        self.compile_s = time.perf_counter() - t

    def new_rows(self, batch):
        from lmformatenforcer import TokenEnforcer

        enforcer = TokenEnforcer(self.data, self.parser)
        return [LmfeRow(self, enforcer) for _ in range(batch)]


# --- llguidance, through seal.engine.structured ---------------------------------------------------------


class Llguidance:
    name = "llguidance"

    def __init__(self, tok, kind):
        import seal.engine.structured as s

        t = time.perf_counter()
        s._ll_tokenizer(tok)
        self.setup_s = time.perf_counter() - t
        t = time.perf_counter()
        self.c = (
            s.regex_constraint(tok, arc_self_edit_regex())
            if kind == "regex"
            else s.json_schema_constraint(tok, arc_self_edit_schema())
        )
        self.compile_s = time.perf_counter() - t

    def logits_processor(self):
        return self.c.logits_processor()


BACKENDS = {"llguidance": Llguidance, "xgrammar": Xgrammar, "outlines": Outlines, "lm-format-enforcer": Lmfe}


def replay_step_ms(backend, tok) -> float:
    """Mean ms per step of the logits processor alone, batch of 8, replaying REPLAY's tokens (forced
    tokens included: a replayed token that the processor refuses is an error)."""
    seqs = [tok(t, add_special_tokens=False).input_ids + [tok.eos_token_id] for t in REPLAY]
    n = max(map(len, seqs))
    ids = torch.full((len(seqs), n + 1), tok.eos_token_id)
    for i, s in enumerate(seqs):
        ids[i, 1 : len(s) + 1] = torch.tensor(s)
    proc, V = backend.logits_processor(), len(tok)
    t = time.perf_counter()
    for step in range(n):
        allowed = proc(ids[:, : step + 1], torch.zeros(len(seqs), V))
        for i, s in enumerate(seqs):  # every replayed token must be allowed
            if step < len(s) and allowed[i, s[step]] == float("-inf"):
                raise RuntimeError(f"replayed token {s[step]} of row {i} refused at step {step}")
    return 1000 * (time.perf_counter() - t) / n


def run_generation(lm, prompts, constraint, temperature, seed):
    torch.manual_seed(seed)
    t = time.perf_counter()
    texts = generate(lm, prompts, max_new_tokens=128, temperature=temperature, batch_size=8, constraint=constraint)
    seconds = time.perf_counter() - t
    tokens = [len(lm.tokenizer(x, add_special_tokens=False).input_ids) for x in texts]
    plans = [parse(x) for x in texts]
    return {
        "seconds": round(seconds, 2),
        "valid": sum(p.valid for p in plans),
        "n": len(texts),
        "tokens_max": max(tokens),
        "tokens_mean": round(sum(tokens) / len(tokens), 1),
        "reasons": sorted({p.reason for p in plans if not p.valid})[:3],
        "example": texts[0][:300],
    }


def settings_summary(texts: list[str]) -> dict:
    """How often each setting was chosen among the valid self-edits."""
    plans = [p for p in map(parse, texts) if p.valid]

    def count(values):
        return dict(Counter(values).most_common())

    return {
        "valid": len(plans),
        "families": count(",".join(p.families) or "-" for p in plans),
        "per_switch": {f: sum(f in p.families for p in plans) for f in ("basic", "size", "chain", "repeat")},
        "strategy": count(p.strategy for p in plans),
        "lr": count(repr(p.lr) for p in plans),
        "epochs": count(p.epochs for p in plans),
    }


def embedded_samples(lm, tasks, per_task: int, temperature: float) -> dict:
    """Per task `per_task` sampled self-edits, unconstrained and constrained (seal.structured, llguidance)."""
    from seal.experiments.arc_steps import arc_self_edit_constraint

    prompts = [lm.format_prompt(self_edit_prompt(t, "compact")) for t in tasks for _ in range(per_task)]
    out = {}
    for name, constraint in (("unconstrained", None), ("constrained", arc_self_edit_constraint(lm.tokenizer))):
        torch.manual_seed(0)
        t = time.perf_counter()
        texts = generate(lm, prompts, max_new_tokens=128, temperature=temperature, batch_size=8, constraint=constraint)
        seconds = time.perf_counter() - t
        plans = [parse(x) for x in texts]
        tokens = [len(lm.tokenizer(x, add_special_tokens=False).input_ids) for x in texts]
        out[name] = {
            "n": len(texts),
            "valid": sum(p.valid for p in plans),
            "seconds": round(seconds, 1),
            "seconds_per_self_edit": round(seconds / len(texts), 2),
            "tokens_mean": round(sum(tokens) / len(tokens), 1),
            "tokens_max": max(tokens),
            "reasons": dict(Counter(p.reason.split(":")[0].split(" ")[0] for p in plans if not p.valid)),
            "settings": settings_summary(texts),
            "examples": texts[:3],
        }
        print(name, json.dumps(out[name]), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--libs", default=",".join(BACKENDS))
    ap.add_argument("--kinds", default="regex,schema")
    ap.add_argument("--no-model", action="store_true", help="compile and replay only")
    ap.add_argument("--out", default="bench/structured.json")
    ap.add_argument("--samples-per-task", type=int, default=0, help="only the embedded model's validity: N per task")
    ap.add_argument("--temperature", type=float, default=1.0)
    args = ap.parse_args()
    lm = load_model("embedded")
    tok = lm.tokenizer
    tasks = sorted(load_tasks(TASKS), key=lambda t: len(self_edit_prompt(t, "compact")))[:4]
    prompts = [lm.format_prompt(self_edit_prompt(t, "compact")) for t in tasks for _ in range(2)]
    results = {"tasks": [t.id for t in tasks], "rows": []}
    if args.samples_per_task:
        results["samples"] = embedded_samples(lm, tasks, args.samples_per_task, args.temperature)
        Path(args.out).write_text(json.dumps(results, indent=1))
        return
    if not args.no_model:
        for temp in (0.0, 1.0):
            r = run_generation(lm, prompts, None, temp, 0)
            results["rows"].append({"lib": "none", "kind": "-", "temperature": temp, **r})
            print(json.dumps(results["rows"][-1]), flush=True)
    for lib in args.libs.split(","):
        for kind in args.kinds.split(","):
            row = {"lib": lib, "kind": kind}
            try:
                backend = BACKENDS[lib](tok, kind)
                row.update(setup_s=round(backend.setup_s, 3), compile_s=round(backend.compile_s, 3))
                replay_step_ms(backend, tok)  # warm-up: first calls of each code path
                row["replay_ms_per_step"] = round(min(replay_step_ms(backend, tok) for _ in range(3)), 3)
            except Exception as err:
                row["error"] = f"{type(err).__name__}: {err}"[:300]
                results["rows"].append(row)
                print(json.dumps(row), flush=True)
                continue
            if not args.no_model:
                for temp in (0.0, 1.0):
                    try:
                        row[f"t{temp}"] = run_generation(lm, prompts, backend, temp, 0)
                    except Exception as err:
                        row[f"t{temp}"] = {"error": f"{type(err).__name__}: {err}"[:300]}
            results["rows"].append(row)
            print(json.dumps(row), flush=True)
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
