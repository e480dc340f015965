"""Generated ARC-format tasks: families of grid transformations with parameters, small enough that a
135M model can learn one by test-time training, in numbers that make an interval over tasks mean something.

A family is a rule with a finite set of parameter values (gravity: its direction; colour swap: the two
colours) and a way to draw inputs that show the rule. A task is one family at one parameter value: 3-4
demonstrations and one test input, every output the rule applied to its input. Splits are disjoint by
parameters (gravity down may be a training task, gravity left only an evaluation one), and the families in
`held_out` have no training task at all, so an evaluation also asks whether what a policy learned on the
training families carries over.

Everything is drawn from `random.Random` seeded by text (the seed, the split, the index): the same seed
gives the same files on every machine.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from seal.config import ArcGenConfig
from seal.domains.arc import augment
from seal.domains.arc.grids import Grid, Pair, Task

SPLITS = ("train", "val", "eval")
Params = tuple  # one parameter value of a family: ints and names
Draw = Callable[[random.Random, Params, int, int], Grid]  # (rng, params, min side, max side) -> an input


@dataclass(frozen=True)
class Family:
    name: str
    summary: str  # what the rule does, for the data README and the summary table
    params: tuple[Params, ...]  # every parameter value, split between train, val and eval
    rule: Callable[[Grid, Params], Grid]
    draw: Draw
    smallest: int = 3  # its inputs are at least this many cells a side (room for objects, boxes, a patch)


# --- grids ---------------------------------------------------------------------------------------------


def _blank(h: int, w: int) -> list[list[int]]:
    return [[0] * w for _ in range(h)]


def _frozen(cells: list[list[int]]) -> Grid:
    return tuple(tuple(row) for row in cells)


def _side(rng: random.Random, low: int, high: int) -> tuple[int, int]:
    return rng.randint(low, high), rng.randint(low, high)


def _scatter(rng: random.Random, h: int, w: int, density: float, colours: list[int]) -> Grid:
    return _frozen([[rng.choice(colours) if rng.random() < density else 0 for _ in range(w)] for _ in range(h)])


def _components(grid: Grid, same_colour: bool = True) -> list[list[tuple[int, int]]]:
    """The 4-connected groups of non-background cells (of one colour each, unless `same_colour` is off)."""
    h, w, seen, out = len(grid), len(grid[0]), set(), []
    for start in ((y, x) for y in range(h) for x in range(w)):
        if start in seen or grid[start[0]][start[1]] == 0:
            continue
        seen.add(start)
        stack, group = [start], []
        while stack:
            y, x = stack.pop()
            group.append((y, x))
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < h and 0 <= nx < w and (ny, nx) not in seen and grid[ny][nx] != 0:
                    if not same_colour or grid[ny][nx] == grid[y][x]:
                        seen.add((ny, nx))
                        stack.append((ny, nx))
        out.append(group)
    return out


DIRECTIONS = {"down": (1, 0), "up": (-1, 0), "right": (0, 1), "left": (0, -1)}


# --- the rules -----------------------------------------------------------------------------------------

GEOMETRY = {t.name: t for t in augment.GEOMETRIC}


def geometry(grid: Grid, params: Params) -> Grid:
    return GEOMETRY[params[0]](grid)


def colour_swap(grid: Grid, params: Params) -> Grid:
    a, b = params
    return tuple(tuple(b if c == a else a if c == b else c for c in row) for row in grid)


def gravity(grid: Grid, params: Params) -> Grid:
    """Every coloured cell falls as far as it can in the direction, keeping its column's (row's) order."""
    turn = {"down": augment.IDENTITY, "up": augment.ROT180, "right": augment.ROT90, "left": augment.ROT270}[params[0]]
    turned = turn(grid)  # the side to fall to at the bottom: a clockwise turn takes the right side there
    columns = []
    for column in zip(*turned):
        cells = [c for c in column if c != 0]
        columns.append([0] * (len(column) - len(cells)) + cells)
    return turn.inverse(tuple(zip(*columns)))


def shift(grid: Grid, params: Params) -> Grid:
    """The picture moved `amount` cells in the direction; what leaves the grid is lost, background enters."""
    (dy, dx), amount = DIRECTIONS[params[0]], params[1]
    h, w = len(grid), len(grid[0])
    cells = _blank(h, w)
    for y in range(h):
        for x in range(w):
            sy, sx = y - dy * amount, x - dx * amount
            if 0 <= sy < h and 0 <= sx < w:
                cells[y][x] = grid[sy][sx]
    return _frozen(cells)


def recolour_by_size(grid: Grid, params: Params) -> Grid:
    """Every object (4-connected cells of one colour) of exactly `size` cells takes `colour`."""
    size, colour = params
    cells = [list(row) for row in grid]
    for group in _components(grid):
        if len(group) == size:
            for y, x in group:
                cells[y][x] = colour
    return _frozen(cells)


def fill_enclosed(grid: Grid, params: Params) -> Grid:
    """Background cells that cannot reach the border through background take `colour`."""
    h, w = len(grid), len(grid[0])
    border = {(y, x) for y in range(h) for x in range(w) if y in (0, h - 1) or x in (0, w - 1)}
    open_ = {(y, x) for y, x in border if grid[y][x] == 0}
    stack = list(open_)
    while stack:
        y, x = stack.pop()
        for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
            if 0 <= ny < h and 0 <= nx < w and grid[ny][nx] == 0 and (ny, nx) not in open_:
                open_.add((ny, nx))
                stack.append((ny, nx))
    cells = [list(row) for row in grid]
    for y in range(h):
        for x in range(w):
            if grid[y][x] == 0 and (y, x) not in open_:
                cells[y][x] = params[0]
    return _frozen(cells)


def crop(grid: Grid, params: Params) -> Grid:
    """The part of the grid inside the bounding box of the cells of `colour`."""
    cells = [(y, x) for y, row in enumerate(grid) for x, c in enumerate(row) if c == params[0]]
    ys, xs = [y for y, _ in cells], [x for _, x in cells]
    return tuple(row[min(xs) : max(xs) + 1] for row in grid[min(ys) : max(ys) + 1])


def scale(grid: Grid, params: Params) -> Grid:
    """Every cell becomes a block of `fy` x `fx` cells."""
    fy, fx = params
    return tuple(tuple(c for c in row for _ in range(fx)) for row in grid for _ in range(fy))


def tile(grid: Grid, params: Params) -> Grid:
    """`ny` x `nx` copies of the grid side by side; with `mirror`, every other copy is mirrored."""
    ny, nx, mode = params
    rows = []
    for i in range(ny):
        band = augment.flip_ud(grid) if mode == "mirror" and i % 2 else grid
        rows += [
            tuple(c for j in range(nx) for c in (row[::-1] if mode == "mirror" and j % 2 else row)) for row in band
        ]
    return tuple(rows)


LINE_DIRECTIONS = {
    "up": ("up",),
    "down": ("down",),
    "left": ("left",),
    "right": ("right",),
    "horizontal": ("left", "right"),
    "vertical": ("up", "down"),
    "cross": ("up", "down", "left", "right"),
}


def lines(grid: Grid, params: Params) -> Grid:
    """From every coloured cell a line of its colour to the border, in the direction(s); the lines of later
    cells (in reading order) over earlier ones, every starting cell kept."""
    h, w = len(grid), len(grid[0])
    seeds = [(y, x, c) for y, row in enumerate(grid) for x, c in enumerate(row) if c != 0]
    cells = [list(row) for row in grid]
    for y, x, c in seeds:
        for name in LINE_DIRECTIONS[params[0]]:
            dy, dx = DIRECTIONS[name]
            ny, nx = y + dy, x + dx
            while 0 <= ny < h and 0 <= nx < w:
                cells[ny][nx] = c
                ny, nx = ny + dy, nx + dx
    for y, x, c in seeds:
        cells[y][x] = c
    return _frozen(cells)


# --- inputs that show the rule -----------------------------------------------------------------------------


def _any_input(density: float, palette: int = 3) -> Draw:
    def draw(rng: random.Random, params: Params, low: int, high: int) -> Grid:
        colours = rng.sample(range(1, 10), palette)
        return _scatter(rng, *_side(rng, low, high), density, colours)

    return draw


def _swap_input(rng: random.Random, params: Params, low: int, high: int) -> Grid:
    others = rng.sample([c for c in range(1, 10) if c not in params], 2)
    h, w = _side(rng, low, high)
    grid = [list(row) for row in _scatter(rng, h, w, 0.6, [*params, *others])]
    grid[rng.randrange(h)][rng.randrange(w)] = params[0]  # both colours shown
    grid[rng.randrange(h)][rng.randrange(w)] = params[1]
    return _frozen(grid)


def _objects_input(rng: random.Random, params: Params, low: int, high: int) -> Grid:
    """Objects of 1-3 cells of one colour (not the rule's), apart from each other, one of the rule's size."""
    size, colour = params
    h, w = _side(rng, low, high)
    paint = rng.choice([c for c in range(1, 10) if c != colour])
    cells, taken = _blank(h, w), set()
    for n in [size, *[rng.randint(1, 3) for _ in range(rng.randint(2, 4))]]:
        for _ in range(20):
            y, x = rng.randrange(h), rng.randrange(w)
            shape = [(y, x)]
            while len(shape) < n:
                cy, cx = rng.choice(shape)
                dy, dx = rng.choice(list(DIRECTIONS.values()))
                if 0 <= cy + dy < h and 0 <= cx + dx < w and (cy + dy, cx + dx) not in shape:
                    shape.append((cy + dy, cx + dx))
            halo = {(sy + a, sx + b) for sy, sx in shape for a in (-1, 0, 1) for b in (-1, 0, 1)}
            if not halo & taken:
                taken |= set(shape)
                for sy, sx in shape:
                    cells[sy][sx] = paint
                break
    return _frozen(cells)


def _boxes_input(rng: random.Random, params: Params, low: int, high: int) -> Grid:
    """One or two hollow rectangles (the enclosed regions) and a few loose cells, none of the fill colour."""
    h, w = _side(rng, low, high)
    palette = [c for c in range(1, 10) if c != params[0]]
    cells, taken = _blank(h, w), set()
    for _ in range(rng.randint(1, 2)):
        for _ in range(20):
            bh, bw = rng.randint(3, min(h, 5)), rng.randint(3, min(w, 5))
            y, x = rng.randint(0, h - bh), rng.randint(0, w - bw)
            box = {(y + a, x + b) for a in range(bh) for b in range(bw)}
            halo = {(sy + a, sx + b) for sy, sx in box for a in (-1, 0, 1) for b in (-1, 0, 1)}
            if not halo & taken:
                taken |= box
                colour = rng.choice(palette)
                for sy, sx in box:
                    if sy in (y, y + bh - 1) or sx in (x, x + bw - 1):
                        cells[sy][sx] = colour
                break
    for _ in range(rng.randint(0, 2)):
        y, x = rng.randrange(h), rng.randrange(w)
        if (y, x) not in taken:
            cells[y][x] = rng.choice(palette)
    return _frozen(cells)


def _crop_input(rng: random.Random, params: Params, low: int, high: int) -> Grid:
    """Loose cells of other colours, and a patch of 2-4 x 2-4 cells whose corners hold the crop colour."""
    (colour,) = params
    h, w = _side(rng, low, high)
    grid = [list(row) for row in _scatter(rng, h, w, 0.2, rng.sample([c for c in range(1, 10) if c != colour], 2))]
    bh, bw = rng.randint(2, min(4, h - 1)), rng.randint(2, min(4, w - 1))
    y, x = rng.randint(0, h - bh), rng.randint(0, w - bw)
    for a in range(bh):
        for b in range(bw):
            corner = a in (0, bh - 1) and b in (0, bw - 1)
            grid[y + a][x + b] = colour if corner or rng.random() < 0.4 else grid[y + a][x + b]
    return _frozen(grid)


def _small_input(limit: Callable[[Params], tuple[int, int]], density: float) -> Draw:
    """An input small enough that the output (`limit` times larger in each direction) stays within max side."""

    def draw(rng: random.Random, params: Params, low: int, high: int) -> Grid:
        fy, fx = limit(params)
        h, w = rng.randint(2, max(2, high // fy)), rng.randint(2, max(2, high // fx))
        return _scatter(rng, h, w, density, rng.sample(range(1, 10), 3))

    return draw


def _seeds_input(rng: random.Random, params: Params, low: int, high: int) -> Grid:
    h, w = _side(rng, low, high)
    cells = _blank(h, w)
    for _ in range(rng.randint(1, 2)):
        cells[rng.randrange(h)][rng.randrange(w)] = rng.randint(1, 9)
    return _frozen(cells)


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family("geometry", "the grid rotated, flipped or transposed", tuple((n,) for n in GEOMETRY), geometry,
               _any_input(0.5)),
        Family("colour_swap", "two colours swap places", tuple((a, b) for a in range(1, 10) for b in range(a + 1, 10)),
               colour_swap, _swap_input),
        Family("gravity", "coloured cells fall to one side", tuple((d,) for d in DIRECTIONS), gravity,
               _any_input(0.3)),
        Family("shift", "the picture moves 1 or 2 cells to one side", tuple((d, n) for d in DIRECTIONS for n in (1, 2)),
               shift, _any_input(0.35)),
        Family("recolour_by_size", "objects of one size (1-3 cells) take a colour",
               tuple((s, c) for s in (1, 2, 3) for c in range(1, 10)), recolour_by_size, _objects_input, smallest=4),
        Family("fill_enclosed", "enclosed background takes a colour", tuple((c,) for c in range(1, 10)),
               fill_enclosed, _boxes_input, smallest=4),
        Family("crop", "the box around one colour's cells is cut out", tuple((c,) for c in range(1, 10)), crop,
               _crop_input, smallest=5),
        Family("scale", "every cell becomes a block", tuple((a, b) for a in (1, 2, 3) for b in (1, 2, 3) if a * b > 1),
               scale, _small_input(lambda p: p, 0.6)),
        Family("tile", "copies of the grid side by side, plain or mirrored",
               tuple((a, b, m) for a, b in ((1, 2), (2, 1), (2, 2), (1, 3), (3, 1)) for m in ("plain", "mirror")),
               tile, _small_input(lambda p: p[:2], 0.6)),
        Family("lines", "lines from every coloured cell to the border", tuple((d,) for d in LINE_DIRECTIONS), lines,
               _seeds_input, smallest=4),
    ]
}  # fmt: skip


def family_of(task_id: str) -> str:
    """The family a generated task's id names (`gravity.down.007`), or "other" for any other task."""
    name = task_id.split(".", 1)[0]
    return name if name in FAMILIES else "other"


def params_label(params: Params) -> str:
    return "-".join(map(str, params))


# --- tasks and splits ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GeneratedTask:
    task: Task
    family: str
    params: Params


def families(cfg: ArcGenConfig) -> list[str]:
    """The families to generate, checked: known, the held-out ones among them, one left for training."""
    names = list(FAMILIES) if cfg.families is None else cfg.families
    unknown = sorted(set(names) - set(FAMILIES))
    if unknown:
        raise ValueError(f"unknown task family {unknown[0]!r}; the families are {', '.join(FAMILIES)}")
    stray = sorted(set(cfg.held_out) - set(names))
    if stray:
        raise ValueError(f"held_out family {stray[0]!r} is not among the generated families")
    cramped = [n for n in names if FAMILIES[n].smallest > cfg.max_side]
    if cramped:
        raise ValueError(
            f"family {cramped[0]!r} needs grids of {FAMILIES[cramped[0]].smallest} cells a side: raise max_side"
        )
    if cfg.train and not set(names) - set(cfg.held_out):
        raise ValueError("every family is held out: no family is left for the training split")
    return names


def split_params(cfg: ArcGenConfig) -> dict[str, dict[str, tuple[Params, ...]]]:
    """family -> split -> its parameter values: disjoint, each split of a family at least one value; a held-out
    family's values go to val and eval only."""
    out = {}
    for name in families(cfg):
        values = list(FAMILIES[name].params)
        random.Random(f"{cfg.seed}:{name}:params").shuffle(values)
        held = name in cfg.held_out
        n = len(values)
        n_eval = max(1, round(n * (0.6 if held else 0.35)))
        n_val = n - n_eval if held else max(1, round(n * 0.25))
        out[name] = {"eval": tuple(values[:n_eval]), "val": tuple(values[n_eval : n_eval + n_val]),
                     "train": () if held else tuple(values[n_eval + n_val :])}  # fmt: skip
    return out


def _task(family: Family, params: Params, task_id: str, rng: random.Random, cfg: ArcGenConfig) -> Task:
    """Demonstrations and a test input that show the rule: no output equal to its input, no repeated input."""
    n = rng.randint(cfg.min_demonstrations, cfg.max_demonstrations) + 1
    pairs: list[Pair] = []
    for _ in range(200 * n):
        grid = family.draw(rng, params, max(cfg.min_side, family.smallest), cfg.max_side)
        output = family.rule(grid, params)
        if output != grid and all(p.input != grid for p in pairs):
            pairs.append(Pair(grid, output))
            if len(pairs) == n:
                return Task(task_id, tuple(pairs[:-1]), tuple(pairs[-1:]))
    raise ValueError(f"{task_id}: no input that shows the rule within {cfg.min_side}-{cfg.max_side} cells a side")


def generate(cfg: ArcGenConfig) -> dict[str, list[GeneratedTask]]:
    """Every split's tasks: the families present in a split in turn, each cycling through its split's values."""
    values = split_params(cfg)
    out = {}
    for split in SPLITS:
        present = [name for name in values if values[name][split]]
        seen: Counter[str] = Counter()
        tasks = []
        for i in range(getattr(cfg, split)):
            name = present[i % len(present)]
            params = values[name][split][seen[name] % len(values[name][split])]
            seen[name] += 1
            task_id = f"{name}.{params_label(params)}.{split}{i:03d}"
            rng = random.Random(f"{cfg.seed}:{split}:{i}")
            tasks.append(GeneratedTask(_task(FAMILIES[name], params, task_id, rng, cfg), name, params))
        out[split] = tasks
    return out


def _lists(grid: Grid) -> list[list[int]]:
    return [list(row) for row in grid]


def write(out: str | Path, made: dict[str, list[GeneratedTask]]) -> dict[str, dict[str, Path]]:
    """`{split}_challenges.json` and `{split}_solutions.json` (the Kaggle format every `seal arc` command reads)
    and `{split}_rules.json` (each task's family and parameters) per split; their paths."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, tasks in made.items():
        files = {
            "challenges": {
                g.task.id: {"train": [{"input": _lists(p.input), "output": _lists(p.output)} for p in g.task.train],
                            "test": [{"input": _lists(p.input)} for p in g.task.test]}
                for g in tasks
            },
            "solutions": {g.task.id: [_lists(p.output) for p in g.task.test] for g in tasks},
            "rules": {g.task.id: {"family": g.family, "params": list(g.params)} for g in tasks},
        }  # fmt: skip
        paths[split] = {}
        for kind, data in files.items():
            path = folder / f"{split}_{kind}.json"
            path.write_text(json.dumps(data, separators=(",", ":")) + "\n")
            paths[split][kind] = path
    return paths


def summary(made: dict[str, list[GeneratedTask]], cfg: ArcGenConfig) -> list[list[str]]:
    """Rows of (family, what it does, per split "tasks (parameter values)", held out or not)."""
    values = split_params(cfg)
    rows = []
    for name in values:
        counts = [f"{sum(g.family == name for g in made[s])} ({len(values[name][s])})" for s in SPLITS]
        rows.append([name, FAMILIES[name].summary, *counts, "held out" if name in cfg.held_out else ""])
    return rows
