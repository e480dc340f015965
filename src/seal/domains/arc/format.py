"""Grids as text, and tasks as training sequences and prompts.

A grid is written one row per line, one digit per cell ("compact": `0120`), or with a space
between cells ("spaced": `0 1 2 0`). Compact suits tokenizers that split digits one per token
(SmolLM2, Qwen2.5: a 10x10 grid is 110 tokens); spaced suits those that merge runs of digits
(Llama-3 merges up to three, so compact would make the cell boundaries ambiguous to the model),
where " 1" is one token. `tokens_per_grid` measures it for any tokenizer.

An example reads `input:` grid `output:` grid; a prompt holds the demonstrations and ends
with the query's input and `output:`, the completion is the output grid.
"""

from __future__ import annotations

import re
from itertools import combinations

from seal.domains.arc.grids import Grid, Pair, Task

_ROW = {"compact": re.compile(r"^[0-9]+$"), "spaced": re.compile(r"^[0-9]( [0-9])*$")}


def grid_text(grid: Grid, style: str = "compact") -> str:
    sep = "" if style == "compact" else " "
    return "\n".join(sep.join(map(str, row)) for row in grid)


def parse_grid(text: str, style: str = "compact") -> Grid | None:
    """The grid at the start of a model's output (blank lines before it skipped), or None if there is
    none or its rows differ in length. Text after the grid's last row is ignored."""
    rows = []
    for line in text.strip("\n").split("\n"):
        line = line.strip()
        if not _ROW[style].match(line):
            break
        rows.append(tuple(int(c) for c in line.split(" ")) if style == "spaced" else tuple(int(c) for c in line))
    if not rows or len({len(r) for r in rows}) != 1:
        return None
    return tuple(rows)


def example_text(pair: Pair, style: str) -> str:
    return f"input:\n{grid_text(pair.input, style)}\noutput:\n{grid_text(pair.output, style)}\n"


def prompt(demos: tuple[Pair, ...], query: Grid, style: str) -> str:
    shown = "\n".join(example_text(d, style) for d in demos)
    return f"{shown}\ninput:\n{grid_text(query, style)}\noutput:\n"


def leave_out_sequences(task: Task, leave_out: tuple[int, ...], style: str) -> list[tuple[str, str]]:
    """(prompt, completion) pairs: each demonstration in turn is the query, with n-1 (n-2, ...) of the others
    shown; leave-n-out needs at least n+1 demonstrations."""
    out = []
    demos = task.train
    for n in leave_out:
        if len(demos) < n + 1:
            continue
        for held in combinations(range(len(demos)), n):
            shown = tuple(d for i, d in enumerate(demos) if i not in held)
            for q in held:
                out.append((prompt(shown, demos[q].input, style), grid_text(demos[q].output, style)))
    return out


def tokens_per_grid(tokenizer, grid: Grid, style: str) -> int:
    return len(tokenizer(grid_text(grid, style) + "\n", add_special_tokens=False).input_ids)
