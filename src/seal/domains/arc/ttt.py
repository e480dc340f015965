"""Test-time training data from a plan, and prediction by augmented voting.

Training data: the task itself and one transformed copy per augmentation the plan switched
on, each with a random colour permutation and demonstration order, expanded into
leave-n-out (prompt, output grid) sequences; duplicates and grids over 30x30 dropped, capped.

Prediction: several views of each test input (a symmetry of the square, a colour
permutation, a shuffled demonstration order), each decoded greedily, mapped back through
the view's inverse and voted on; the two most voted grids are the attempts.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass

from seal.domains.arc import augment
from seal.domains.arc.format import leave_out_sequences, parse_grid, prompt
from seal.domains.arc.grids import Grid, Pair, Task
from seal.domains.arc.selfedit import ArcPlan, invalid


@dataclass(frozen=True)
class TTTData:
    plan: ArcPlan  # the plan, made invalid when its data breaks a rule
    documents: list  # (prompt, completion) for output-token loss, or prompt + completion text for all tokens


def training_documents(
    task: Task, plan: ArcPlan, *, style: str, leave_out: tuple[int, ...], max_examples: int, batch_size: int,
    max_steps: int, seed: int, fits_in_context=lambda text: True,
) -> TTTData:  # fmt: skip
    if not plan.valid:
        return TTTData(plan, [])
    rng = random.Random(seed)
    variants = [task]
    for name in plan.families:
        for t in augment.family(name, rng):
            transformed = augment.apply_to_task(t, task)
            if transformed is not None:
                variants.append(transformed)
    pairs: list[tuple[str, str]] = leave_out_sequences(task, leave_out, style)  # the task as given comes first
    for v in variants[1:]:
        recoloured = augment.apply_to_task(augment.colour_permutation(rng), v)
        demos = list(recoloured.train)
        rng.shuffle(demos)
        pairs += leave_out_sequences(Task(recoloured.id, tuple(demos), recoloured.test), leave_out, style)
    pairs = [p for p in dict.fromkeys(pairs) if fits_in_context(p[0] + p[1])]
    if not pairs:
        return TTTData(invalid("no training example fits (too few demonstrations or too long)"), [])
    if len(pairs) > max_examples:
        # The plain task's examples first, then a sample of the augmented ones.
        own = len(leave_out_sequences(task, leave_out, style))
        pairs = pairs[: min(own, max_examples)] + rng.sample(pairs[own:], max(0, max_examples - own))
    steps = plan.epochs * math.ceil(len(pairs) / batch_size)
    if steps > max_steps:
        return TTTData(invalid(f"{steps} optimiser steps, more than the {max_steps} allowed"), [])
    documents = pairs if plan.strategy == "output" else [p + c for p, c in pairs]
    return TTTData(plan, documents)


@dataclass(frozen=True)
class View:
    test_index: int
    prompt: str
    transform: augment.Transform
    group: str = "all"  # the release's voting groups views by the geometric transform they undo


def views(task: Task, n_views: int, style: str, seed: int) -> list[View]:
    """n_views prompts per test input: the first is the task as given, then symmetries with permuted colours
    and demonstration order."""
    rng = random.Random(seed)
    out = []
    for i, pair in enumerate(task.test):
        for v in range(n_views):
            geometric = augment.VOTING_VIEWS[v % len(augment.VOTING_VIEWS)]
            t = geometric if v == 0 else geometric.then(augment.colour_permutation(rng))
            demos = [augment.apply_to_pair(t, d) for d in task.train]
            if v > 0:
                rng.shuffle(demos)
            out.append(View(i, prompt(tuple(demos), t(pair.input), style), t))
    return out


def vote(candidates: list[Grid | None], attempts: int = 2) -> list[Grid]:
    """The most frequent grids, most votes first (ties: the one seen first)."""
    counts = Counter(g for g in candidates if g is not None)
    first_seen = {g: i for i, g in reversed(list(enumerate(candidates))) if g is not None}
    return sorted(counts, key=lambda g: (-counts[g], first_seen[g]))[:attempts]


# --- the SEAL release's views and voting -----------------------------------------------------------

# The release's geometric views: each a transform of one leave-one-out view, voted on in the group of the
# transform that maps its answer back (rot90's answer is undone by rot270).
RELEASE_GEOMETRIC = {
    augment.TRANSPOSE: "transpose",
    augment.FLIP_UD: "flip_ud",
    augment.FLIP_LR: "flip_lr",
    augment.ROT90: "rot270",
    augment.ROT180: "rot180",
}
RELEASE_GROUPS = ("all", "identity", "transpose", "flip_ud", "flip_lr", "rot180", "rot270")


def release_views(task: Task, style: str, seed: int, permutations: int = 2) -> list[View]:
    """Per test input, as the release predicts: every subset of the demonstrations that leaves one out, each
    also in `permutations` shuffled orders (duplicates dropped), then the five geometric transforms, each
    applied to one of those views drawn at random."""
    rng = random.Random(seed)
    out = []
    for i, pair in enumerate(task.test):
        orders: list[tuple[Pair, ...]] = []
        for left_out in range(len(task.train)) if len(task.train) > 1 else [None]:
            shown = tuple(d for j, d in enumerate(task.train) if j != left_out)
            orders.append(shown)
            for _ in range(permutations):
                orders.append(tuple(rng.sample(shown, len(shown))))
        orders = list(dict.fromkeys(orders))
        out += [View(i, prompt(demos, pair.input, style), augment.IDENTITY, "identity") for demos in orders]
        for t, group in RELEASE_GEOMETRIC.items():
            demos = rng.choice(orders)
            out.append(
                View(i, prompt(tuple(augment.apply_to_pair(t, d) for d in demos), t(pair.input), style), t, group)
            )
    return out


def _majority_by_rows(grids: list[Grid]) -> Grid:
    """A grid of the most common shape whose every row is the most common row at that place."""
    shape = Counter((len(g), len(g[0])) for g in grids).most_common(1)[0][0]
    rows = []
    for r in range(shape[0]):
        candidates = [g[r] for g in grids if len(g) > r and len(g[r]) == shape[1]]
        rows.append(Counter(candidates).most_common(1)[0][0])
    return tuple(rows)


def _three_candidates(grids: list[Grid]) -> list[Grid]:
    """The three most common grids; where there are fewer, the row-wise and then column-wise majority grids
    stand in (the release's get_all_type_of_votingsv2)."""
    if not grids:
        return []
    ranked = vote(grids, attempts=3)
    by_rows = _majority_by_rows(grids)
    by_columns = augment.transpose(_majority_by_rows([augment.transpose(g) for g in grids]))
    first = ranked[0]
    second = ranked[1] if len(ranked) > 1 else (by_rows if by_rows != first else by_columns)
    third = ranked[2] if len(ranked) > 2 else (by_rows if by_rows not in (first, second) else by_columns)
    return [first, second, third]


def release_vote(candidates: list[tuple[str, Grid | None]], attempts: int = 2) -> list[Grid]:
    """The release's two-level vote: three candidates from every group of views (all of them, the
    untransformed ones, each geometric transform's), then the most common of those candidates; of two
    candidates with as many votes, the one the untransformed views gave more often comes first."""
    groups: dict[str, list[Grid]] = {"all": [g for _, g in candidates if g is not None]}
    for group, grid in candidates:
        if grid is not None:
            groups.setdefault(group, []).append(grid)
    pooled = [c for name in RELEASE_GROUPS if name in groups for c in _three_candidates(groups[name])]
    if not pooled:
        return []
    counts, identity = Counter(pooled), Counter(groups.get("identity", []))
    first_seen = {g: i for i, g in reversed(list(enumerate(pooled)))}
    ranked = sorted(counts, key=lambda g: (-counts[g], -identity[g], first_seen[g]))
    return ranked[:attempts]


def attempts_from_outputs(
    task: Task, task_views: list[View], outputs: list[str], style: str, attempts: int, voting: str = "seal"
) -> list[list[Grid]]:
    """Per test input, the voted attempts from the views' raw outputs (mapped back through each view's
    transform), by one majority vote (seal) or the release's vote within and across groups of views."""
    per_test: list[list[tuple[str, Grid | None]]] = [[] for _ in task.test]
    for view, text in zip(task_views, outputs):
        grid = parse_grid(text, style)
        try:
            per_test[view.test_index].append((view.group, None if grid is None else view.transform.inverse(grid)))
        except IndexError:  # a predicted grid too small for the view's inverse (e.g. halving 1 row)
            per_test[view.test_index].append((view.group, None))
    if voting == "release":
        return [release_vote(c, attempts) for c in per_test]
    return [vote([g for _, g in c], attempts) for c in per_test]


def solved(task: Task, attempts: list[list[Grid]]) -> bool:
    """Every test input's solution is among its attempts."""
    return all(pair.output in tries for pair, tries in zip(task.test, attempts))
