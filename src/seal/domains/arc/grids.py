"""ARC tasks: load the Kaggle-format challenge/solution files and validate every grid.

A grid is a tuple of equal-length rows of colours 0-9, at most 30x30 (immutable, so grids
can be compared, hashed, deduplicated and voted on).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from seal.datasets import locate
from seal.errors import DataError

Grid = tuple[tuple[int, ...], ...]
MAX_SIDE = 30


def to_grid(value: object, where: str) -> Grid:
    """A validated grid, or a DataError that says where and what is wrong."""
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: a grid must be a non-empty list of rows")
    if not all(isinstance(row, list) and row for row in value):
        raise DataError(f"{where}: every row must be a non-empty list of colours")
    width = len(value[0])
    if any(len(row) != width for row in value):
        raise DataError(f"{where}: rows have different lengths ({sorted({len(r) for r in value})})")
    if len(value) > MAX_SIDE or width > MAX_SIDE:
        raise DataError(f"{where}: grid is {len(value)}x{width}, larger than {MAX_SIDE}x{MAX_SIDE}")
    for row in value:
        for cell in row:
            if type(cell) is not int or not 0 <= cell <= 9:
                raise DataError(f"{where}: colour {cell!r} is not an integer 0-9")
    return tuple(tuple(row) for row in value)


def fits(grid: Grid) -> bool:
    return len(grid) <= MAX_SIDE and len(grid[0]) <= MAX_SIDE


@dataclass(frozen=True)
class Pair:
    input: Grid
    output: Grid | None  # None for a test input whose solution is not given


@dataclass(frozen=True)
class Task:
    id: str
    train: tuple[Pair, ...]  # the demonstrations
    test: tuple[Pair, ...]

    @property
    def key(self) -> str:
        return self.id


def _read_json(path: str | Path) -> object:
    try:
        return json.loads(locate(path).read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None


def _pairs(items: object, where: str, need_output: bool) -> tuple[Pair, ...]:
    if not isinstance(items, list) or not items:
        raise DataError(f"{where}: expected a non-empty list of examples")
    pairs = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "input" not in item:
            raise DataError(f"{where}[{i}]: missing field 'input'")
        if need_output and "output" not in item:
            raise DataError(f"{where}[{i}]: missing field 'output'")
        output = to_grid(item["output"], f"{where}[{i}].output") if "output" in item else None
        pairs.append(Pair(to_grid(item["input"], f"{where}[{i}].input"), output))
    return tuple(pairs)


def load_tasks(challenges: str | Path, solutions: str | Path | None = None, ids: list[str] | None = None) -> list[Task]:
    """Tasks from a challenges file, test outputs filled from a solutions file when given.
    `ids` picks tasks (in that order); a missing id is an error."""
    data = _read_json(challenges)
    if not isinstance(data, dict):
        raise DataError(f"{challenges}: expected an object mapping task ids to tasks")
    answers = _read_json(solutions) if solutions else {}
    if not isinstance(answers, dict):
        raise DataError(f"{solutions}: expected an object mapping task ids to lists of output grids")
    wanted = ids if ids is not None else sorted(data)
    missing = [i for i in wanted if i not in data]
    if missing:
        raise DataError(f"{challenges}: no task {missing[0]!r}")
    tasks = []
    for task_id in wanted:
        item = data[task_id]
        where = f"{challenges}: task {task_id}"
        if not isinstance(item, dict) or "train" not in item or "test" not in item:
            raise DataError(f"{where}: needs 'train' and 'test'")
        train = _pairs(item["train"], f"{where}.train", need_output=True)
        test = _pairs(item["test"], f"{where}.test", need_output=False)
        if task_id in answers:
            outputs = answers[task_id]
            if not isinstance(outputs, list) or len(outputs) != len(test):
                raise DataError(f"{solutions}: task {task_id} needs {len(test)} output grid(s)")
            test = tuple(
                Pair(p.input, to_grid(o, f"{solutions}: task {task_id}[{i}]"))
                for i, (p, o) in enumerate(zip(test, outputs))
            )
        tasks.append(Task(task_id, train, test))
    return tasks
