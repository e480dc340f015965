"""Context distillation (`adapt.objective: distill`): the adapter learns to predict a document without its
context as the frozen model predicts it with the context in front.

The teacher is the model the bank is installed in with every adapter off, reading the document's context
and then the document's own token ids (the two tokenised apart and concatenated: the student's tokens are
exactly the ones the teacher scores). Its pass runs once per document, before training and without
gradient, packed like a training step; only the top-k next-token log-probabilities at the document's
trained positions are kept. The student, the adapter on the document alone, is pulled towards them by
KL(teacher || student) on those tokens, mixed with next-token loss by `adapt.distill_weight`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from seal.engine.adapters import AdapterBank
from seal.engine.packing import pack, packed_forward
from seal.models import LoadedModel


@dataclass(frozen=True)
class Distilled:
    """A text document trained on by distillation: the teacher reads `context` before `text`, the student
    `text` alone. Under `adapt.objective: sft` it is trained on as the plain text document `text`."""

    text: str
    context: str


@dataclass
class TeacherTargets:
    """The teacher's view of one tokenised document, indexed by the student's positions."""

    positions: torch.Tensor  # (m,) positions of the student's sequence whose next token is trained on
    ids: torch.Tensor  # (m, k) the teacher's k most likely next tokens there
    logprobs: torch.Tensor  # (m, k) their log-probabilities, renormalised over the k (the tail is dropped)


def teacher_sequence(
    lm: LoadedModel, context: str, ids: list[int], loss: list[bool]
) -> tuple[list[int], list[int], list[int]]:
    """The teacher's token ids (the context's, then the student's after its leading special tokens), and
    for each trained next-token position of the student's sequence the teacher position predicting the
    same token: (teacher ids, student positions, teacher positions)."""
    specials = set(lm.tokenizer.all_special_ids)
    lead = 0
    while lead < len(ids) and ids[lead] in specials:
        lead += 1
    prefix = lm.tokenizer(context, add_special_tokens=True).input_ids
    # student position j predicts ids[j + 1], which the teacher reads at len(prefix) + j + 1 - lead
    student = [j for j in range(len(ids) - 1) if loss[j + 1] and j + 1 >= lead]
    return prefix + ids[lead:], student, [len(prefix) + j - lead for j in student]


@torch.no_grad()
def teacher_targets(
    lm: LoadedModel,
    bank: AdapterBank,
    documents: list[tuple[str, list[int], list[bool]]],
    top_k: int,
    per_pass: int,
) -> tuple[list[TeacherTargets], int]:
    """The teacher's top-k targets for each (context, student ids, loss mask), `per_pass` documents per
    packed forward pass through the model with no adapter routed; and the tokens the teacher read."""
    out, tokens = [], 0
    for start in range(0, len(documents), per_pass):
        chunk = [teacher_sequence(lm, context, ids, loss) for context, ids, loss in documents[start : start + per_pass]]
        batch = pack([(ids, [False] * len(ids)) for ids, _, _ in chunk], lm.device)
        offsets = [sum(batch["lengths"][:i]) for i in range(len(chunk))]
        tokens += sum(batch["lengths"])
        keep = torch.tensor([o + p for o, (_, _, at) in zip(offsets, chunk) for p in at], dtype=torch.long)
        with bank.route(None), packed_forward(lm.model, batch["lengths"]):
            logits = lm.model(
                input_ids=batch["input_ids"],
                position_ids=batch["position_ids"],
                use_cache=False,
                logits_to_keep=keep.to(lm.device),
            ).logits.squeeze(0)
        values, ids = logits.float().topk(min(top_k, logits.shape[-1]), dim=-1)
        logprobs = values - values.logsumexp(-1, keepdim=True)
        counts = [len(student) for _, student, _ in chunk]
        for (_, student, _), i, lp in zip(chunk, ids.split(counts), logprobs.split(counts)):
            out.append(TeacherTargets(torch.tensor(student, dtype=torch.long, device=lm.device), i, lp))
    return out, tokens


def token_terms(
    logits: torch.Tensor, labels: torch.Tensor, positions: torch.Tensor, ids: torch.Tensor, logprobs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """At each of the packed `positions`: KL(teacher || student) over the teacher's top-k and the student's
    next-token loss, each (m,). The student's log-probabilities are over its whole vocabulary, so the KL is
    zero only where the student puts all its mass on the teacher's k tokens, as the teacher's renormalised
    distribution does."""
    rows = logits.index_select(0, positions).float()
    normaliser = rows.logsumexp(-1, keepdim=True)
    student = rows.gather(1, ids) - normaliser
    kl = (logprobs.exp() * (logprobs - student)).sum(-1)
    nll = (normaliser - rows.gather(1, labels.index_select(0, positions)[:, None])).squeeze(1)
    return kl, nll
