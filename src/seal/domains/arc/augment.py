"""Grid transformations: the paper's augmentation families, each with its inverse.

A `Transform` maps a grid to a grid; applied to a task it maps every input and output the
same way, so the task's rule is transformed consistently. Families (the self-edit switches):
- basic: rotations 90/180/270, flips on both axes, transpose, reflections (the grid next to
  its mirror), cyclic translation;
- size: 2x resolution, 2x height, 2x width;
- chain: a geometric transform followed by 2x resolution;
- repeat: tiling twice along rows, columns, or both.
Colour permutations (0 kept fixed) and demonstration-order permutations apply to any of them.
The test input's views at prediction time use the geometric ones (`VOTING_VIEWS`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from seal.domains.arc.grids import Grid, Pair, Task, fits


@dataclass(frozen=True)
class Transform:
    name: str
    forward: Callable[[Grid], Grid]
    inverse: Callable[[Grid], Grid]

    def __call__(self, grid: Grid) -> Grid:
        return self.forward(grid)

    def then(self, other: Transform) -> Transform:
        return Transform(
            f"{self.name}+{other.name}", lambda g: other(self(g)), lambda g: self.inverse(other.inverse(g))
        )


# --- elementary maps -----------------------------------------------------------------------------


def rot90(g: Grid) -> Grid:  # clockwise
    return tuple(zip(*g[::-1]))


def rot270(g: Grid) -> Grid:
    return tuple(zip(*g))[::-1]


def rot180(g: Grid) -> Grid:
    return tuple(row[::-1] for row in g[::-1])


def flip_lr(g: Grid) -> Grid:
    return tuple(row[::-1] for row in g)


def flip_ud(g: Grid) -> Grid:
    return g[::-1]


def transpose(g: Grid) -> Grid:
    return tuple(zip(*g))


def _left_half(g: Grid) -> Grid:
    return tuple(row[: len(row) // 2] for row in g)


def _top_half(g: Grid) -> Grid:
    return g[: len(g) // 2]


def _every_other_row(g: Grid) -> Grid:
    return g[::2]


def _every_other_column(g: Grid) -> Grid:
    return tuple(row[::2] for row in g)


def _double_rows(g: Grid) -> Grid:
    return tuple(row for row in g for _ in range(2))


def _double_columns(g: Grid) -> Grid:
    return tuple(tuple(c for c in row for _ in range(2)) for row in g)


def _roll(g: Grid, dy: int, dx: int) -> Grid:
    h, w = len(g), len(g[0])
    return tuple(tuple(g[(y - dy) % h][(x - dx) % w] for x in range(w)) for y in range(h))


IDENTITY = Transform("identity", lambda g: g, lambda g: g)
ROT90 = Transform("rot90", rot90, rot270)
ROT180 = Transform("rot180", rot180, rot180)
ROT270 = Transform("rot270", rot270, rot90)
FLIP_LR = Transform("flip_lr", flip_lr, flip_lr)
FLIP_UD = Transform("flip_ud", flip_ud, flip_ud)
TRANSPOSE = Transform("transpose", transpose, transpose)
REFLECT_LR = Transform("reflect_lr", lambda g: tuple(row + row[::-1] for row in g), _left_half)
REFLECT_UD = Transform("reflect_ud", lambda g: g + g[::-1], _top_half)
UPSCALE = Transform(
    "upscale2", lambda g: _double_rows(_double_columns(g)), lambda g: _every_other_row(_every_other_column(g))
)
DOUBLE_HEIGHT = Transform("double_height", _double_rows, _every_other_row)
DOUBLE_WIDTH = Transform("double_width", _double_columns, _every_other_column)
TILE_LR = Transform("tile_lr", lambda g: tuple(row + row for row in g), _left_half)
TILE_UD = Transform("tile_ud", lambda g: g + g, _top_half)
TILE_BOTH = Transform("tile_both", lambda g: TILE_UD(TILE_LR(g)), lambda g: _left_half(_top_half(g)))

GEOMETRIC = (ROT90, ROT180, ROT270, FLIP_LR, FLIP_UD, TRANSPOSE)
VOTING_VIEWS = (IDENTITY, *GEOMETRIC, ROT90.then(FLIP_LR))  # the 8 symmetries of the square


def translate(dy: int, dx: int) -> Transform:
    return Transform(f"translate({dy},{dx})", lambda g: _roll(g, dy, dx), lambda g: _roll(g, -dy, -dx))


def colour_permutation(rng: random.Random) -> Transform:
    """Colours 1-9 shuffled, 0 (the background) kept."""
    shuffled = list(range(1, 10))
    rng.shuffle(shuffled)
    forward = [0, *shuffled]
    backward = [0] * 10
    for c, d in enumerate(forward):
        backward[d] = c
    return Transform(
        "colours(" + "".join(map(str, forward)) + ")",
        lambda g: tuple(tuple(forward[c] for c in row) for row in g),
        lambda g: tuple(tuple(backward[c] for c in row) for row in g),
    )


def family(name: str, rng: random.Random) -> list[Transform]:
    """The transforms one self-edit switch turns on (translation offsets drawn from rng)."""
    if name == "basic":
        return [*GEOMETRIC, REFLECT_LR, REFLECT_UD, translate(rng.randint(1, 3), rng.randint(1, 3))]
    if name == "size":
        return [UPSCALE, DOUBLE_HEIGHT, DOUBLE_WIDTH]
    if name == "chain":
        return [t.then(UPSCALE) for t in GEOMETRIC]
    if name == "repeat":
        return [TILE_LR, TILE_UD, TILE_BOTH]
    raise ValueError(f"unknown augmentation family {name!r}")


FAMILIES = ("basic", "size", "chain", "repeat")


def apply_to_pair(t: Transform, pair: Pair) -> Pair:
    return Pair(t(pair.input), None if pair.output is None else t(pair.output))


def apply_to_task(t: Transform, task: Task) -> Task | None:
    """The task with every grid transformed; None when a grid would exceed 30x30."""
    train = tuple(apply_to_pair(t, p) for p in task.train)
    test = tuple(apply_to_pair(t, p) for p in task.test)
    grids = [g for p in train + test for g in (p.input, p.output) if g is not None]
    if not all(fits(g) for g in grids):
        return None
    return Task(f"{task.id}/{t.name}", train, test)
