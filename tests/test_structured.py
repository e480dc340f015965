"""Grammar-constrained self-edits: a random model's ARC self-edits always parse under the constraint."""

import itertools
import json
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seal.domains.arc.grammar import (
    arc_self_edit_regex,
    arc_self_edit_schema,
    integer_range_regex,
    positive_number_regex,
)
from seal.domains.arc.selfedit import SWITCHES, parse_self_edit, plan_json
from seal.engine.sampling import generate
from seal.engine.structured import _unpack, json_schema_constraint
from seal.experiments.arc_steps import arc_self_edit_constraint

PROMPTS = [  # of different lengths: left padding in every batch
    "Question: Who won the game?\nAnswer:",
    "The capital",
    "Topic: Geography. The capital of France is Paris; the Seine flows through it. JSON:",
    "0",
]
# The tiny tokenizer knows few of the keys' pieces, so a self-edit is about 220 of its tokens.
ROOM = 320

PLANS = [
    plan_json(families, strategy, lr, epochs)
    for families, strategy, lr, epochs in itertools.product(
        [(), ("basic",), ("size", "repeat"), tuple(SWITCHES.values())],
        ["all", "output"],
        [0.01, 1e-3, 3e-4, 1e-4, 2.5e-05, 1e-05, 5e-06],
        [1, 2, 10],
    )
]


def valid(texts, **limits):
    return [parse_self_edit(t, **limits).valid for t in texts]


def test_plan_json_is_in_the_schema_and_in_the_sampled_language(tiny_lm):
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(arc_self_edit_schema(1e-2, 10))
    constraint = arc_self_edit_constraint(tiny_lm.tokenizer)
    pattern = re.compile(arc_self_edit_regex())
    for text in PLANS:
        validator.validate(json.loads(text))
        assert pattern.fullmatch(text), text
    for text in PLANS[::7]:  # through llguidance too, in the tokenizer's own tokenization
        assert constraint.accepts(text), text


@pytest.mark.parametrize(
    "change",
    [
        {"learning_rate": 0},
        {"learning_rate": 0.02},
        {"learning_rate": True},
        {"num_train_epochs": 0},
        {"num_train_epochs": 11},
        {"strategy": "train_using_some_tokens"},
        {"extra": 1},
    ],
)
def test_the_schema_refuses_what_parse_self_edit_refuses(change):
    jsonschema = pytest.importorskip("jsonschema")
    data = json.loads(plan_json(("basic",), "output", 1e-4, 2))
    data["training"].update(change)
    assert not parse_self_edit(json.dumps(data)).valid or "extra" in change
    assert not jsonschema.Draft202012Validator(arc_self_edit_schema()).is_valid(data)
    assert not re.fullmatch(arc_self_edit_regex(), json.dumps(data))


def test_a_whole_float_number_of_epochs_is_outside_the_sampled_language():
    """JSON schema's "integer" takes 2.0 (draft 2020-12), parse_self_edit does not: the regex is the exact rule."""
    data = json.loads(plan_json(("basic",), "output", 1e-4, 2))
    data["training"]["num_train_epochs"] = 2.0
    assert not parse_self_edit(json.dumps(data)).valid
    assert not re.fullmatch(arc_self_edit_regex(), json.dumps(data))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_every_text_of_the_sampled_language_parses(data):
    max_lr = data.draw(st.sampled_from([1e-2, 3e-3, 0.0125, 5e-5, 1.0, 2.5]))
    max_epochs = data.draw(st.sampled_from([1, 3, 10, 12, 100]))
    text = data.draw(st.from_regex(arc_self_edit_regex(max_lr, max_epochs), fullmatch=True))
    plan = parse_self_edit(text, max_lr=max_lr, max_epochs=max_epochs)
    assert plan.valid, (text, plan.reason)
    assert len(text) <= 280  # all switches false, output tokens, 100 epochs and 5e-5 / 10^6 as 0.0000000000123: 271


def test_number_languages_are_exact_at_their_bounds():
    for high in (1, 9, 10, 12, 100, 250):
        pattern = re.compile(integer_range_regex(high))
        assert [i for i in range(400) if pattern.fullmatch(str(i))] == list(range(1, high + 1))
        assert not pattern.fullmatch("01")
    lr = re.compile(positive_number_regex(1e-2))
    for text in ["0.01", "1e-2", "1.00e-2", "0.0001", "1e-4", "1e-04", "2.5e-05", "0.00025", "1e-8", "0.00000001"]:
        assert lr.fullmatch(text), text
    for text in [
        "0",
        "0.0",
        "0.011",
        "1.01e-2",
        "0.02",
        "-0.001",
        "1e-9",
        "0.000000001",
        "1.234e-4",
        "0.0001 ",
        "1E-4",
    ]:
        assert not lr.fullmatch(text), text
    odd = re.compile(positive_number_regex(3e-3))  # a bound that is not a power of ten
    assert odd.fullmatch("0.003") and odd.fullmatch("2.99e-3") and not odd.fullmatch("0.00301")
    with pytest.raises(ValueError):
        positive_number_regex(0.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sampled_self_edits_of_a_random_model_always_parse(tiny_lm, seed):
    constraint = arc_self_edit_constraint(tiny_lm.tokenizer)
    torch.manual_seed(seed)
    texts = generate(tiny_lm, PROMPTS * 2, max_new_tokens=ROOM, temperature=1.0, constraint=constraint)
    assert all(valid(texts)), texts
    assert len(set(texts)) > 1  # sampled rows differ


def test_greedy_and_top_p_self_edits_parse_too(tiny_lm):
    constraint = arc_self_edit_constraint(tiny_lm.tokenizer, max_lr=3e-3, max_epochs=4)
    greedy = generate(tiny_lm, PROMPTS, max_new_tokens=ROOM, constraint=constraint)
    torch.manual_seed(0)
    nucleus = generate(tiny_lm, PROMPTS, max_new_tokens=ROOM, temperature=0.7, top_p=0.9, constraint=constraint)
    assert all(valid(greedy + nucleus, max_lr=3e-3, max_epochs=4))


def test_unconstrained_self_edits_of_the_same_model_do_not_parse(tiny_lm):
    torch.manual_seed(0)
    texts = generate(tiny_lm, PROMPTS * 2, max_new_tokens=ROOM, temperature=1.0)
    assert not any(valid(texts))


def test_rows_keep_their_own_grammar_state(tiny_lm):
    """A batched row's greedy self-edit is the one it gets alone, whatever batch and padding it is in."""
    constraint = arc_self_edit_constraint(tiny_lm.tokenizer)
    prompts = PROMPTS + ["Implications:\n1. A list of facts follows.", "Paris"]
    batched = generate(tiny_lm, prompts, max_new_tokens=ROOM, batch_size=6, constraint=constraint)
    alone = [generate(tiny_lm, [p], max_new_tokens=ROOM, constraint=constraint)[0] for p in prompts]
    assert batched == alone
    assert all(valid(batched))


def test_each_row_follows_its_own_text(tiny_lm):
    """Two rows fed different self-edits through one processor: each may go on with its own next token only."""
    tok = tiny_lm.tokenizer
    constraint = arc_self_edit_constraint(tok)
    texts = [plan_json(("basic",), "all", 1e-4, 2), plan_json((), "output", 0.01, 10)]
    seqs = [tok(t, add_special_tokens=False).input_ids for t in texts]
    processor = constraint.logits_processor()
    ids = torch.zeros((2, 1), dtype=torch.long)
    diverged = False
    for step in range(max(map(len, seqs))):
        scores = processor(ids, torch.zeros(2, len(tok)))
        nxt = [s[step] if step < len(s) else tok.eos_token_id for s in seqs]
        for row in range(2):
            assert scores[row, nxt[row]] == 0, (row, step)
        if nxt[0] != nxt[1] and scores[1, nxt[0]] == float("-inf"):
            diverged = True
        ids = torch.cat([ids, torch.tensor([nxt]).T], dim=1)
    assert diverged
    scores = processor(ids, torch.zeros(2, len(tok)))  # both complete: only EOS is left
    assert (scores[:, tok.eos_token_id] == 0).all() and (scores.isinf().sum(1) == len(tok) - 1).all()


def test_chat_formatted_prompts(tiny_lm):
    tiny_lm.tokenizer.chat_template = (
        "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}<|assistant|>"
    )
    tiny_lm.chat = True
    constraint = arc_self_edit_constraint(tiny_lm.tokenizer)
    prompts = [tiny_lm.format_prompt(p) for p in PROMPTS]
    torch.manual_seed(0)
    assert all(valid(generate(tiny_lm, prompts, max_new_tokens=ROOM, temperature=1.0, constraint=constraint)))


def test_a_general_json_schema(tiny_lm):
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 8},
            "n": {"type": "integer", "minimum": 1, "maximum": 5},
        },
        "required": ["name", "n"],
        "additionalProperties": False,
    }
    constraint = json_schema_constraint(tiny_lm.tokenizer, schema)
    torch.manual_seed(0)
    texts = generate(tiny_lm, PROMPTS, max_new_tokens=ROOM, temperature=1.0, constraint=constraint)
    for text in texts:
        data = json.loads(text)
        assert set(data) == {"name", "n"} and 1 <= data["n"] <= 5 and len(data["name"]) <= 8
        assert "  " not in text


def test_logits_wider_than_the_vocabulary_never_pick_the_extra_ids():
    import numpy as np

    mask = _unpack(np.full((2, 2), -1, dtype=np.int32), 70)
    assert mask.shape == (2, 70) and mask[:, :64].all() and not mask[:, 64:].any()
