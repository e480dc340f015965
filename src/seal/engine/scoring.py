"""Scoring adapted models, with the score handed in: the engine knows no task.

A `Scorer` answers a list of probes (whatever a domain asks an adapted model: closed-book questions,
an ARC task's test inputs) with one record each, K adapted models at once when each row is routed
to its own adapter slot of a bank. The knowledge domain's question answering is `seal.experiments.qa`;
ARC's voted prediction is `seal.experiments.arc_steps.ArcScorer`.
"""

from __future__ import annotations

from typing import Any, Protocol

from seal.engine.adapters import AdapterBank
from seal.models import LoadedModel


class Scorer(Protocol):
    """One record per probe; probe i answered by the adapter in `slots[i]` of `bank` (the model as it stands
    without a bank). A picklable object (a dataclass of configs), so that work shipped to a worker carries it."""

    def __call__(
        self, lm: LoadedModel, probes: list[Any], *, bank: AdapterBank | None = None, slots: list[int] | None = None
    ) -> list[Any]: ...


def regroup(flat: list, sizes: list[int]) -> list[list]:
    """`flat` cut back into consecutive groups of `sizes`: per-job results of one batched call
    made over every job's items in order."""
    items = iter(flat)
    return [[next(items) for _ in range(n)] for n in sizes]
