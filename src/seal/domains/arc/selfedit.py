"""The ARC self-edit: the model reads the demonstrations and writes a JSON training configuration.

Accepted shape (the paper's switches and settings; nested as below, or all keys at the top level):

    {"data_generation": {"use_basic_augmentations": true, "use_size_augmentations": false,
                         "use_chain_augmentations": false, "use_repeat_augmentations": false},
     "training": {"strategy": "train_using_output_tokens", "learning_rate": 1e-4, "num_train_epochs": 2}}

A self-edit that does not parse or breaks a rule gives an invalid `ArcPlan` with the reason;
it is recorded with reward 0 and never raises.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from seal.domains.arc.format import example_text
from seal.domains.arc.grids import Task

SWITCHES = {
    "use_basic_augmentations": "basic",
    "use_size_augmentations": "size",
    "use_chain_augmentations": "chain",
    "use_repeat_augmentations": "repeat",
}
STRATEGIES = {"train_using_all_tokens": "all", "train_using_output_tokens": "output"}
SETTINGS = ("strategy", "learning_rate", "num_train_epochs")

# What each option does, in the words the self-edit prompt shows the model: a policy can only choose well
# among options it is told about (with the switches named but not explained, no sample chose the output loss).
SWITCH_HELP = {
    "use_basic_augmentations": "adds copies of the examples rotated, flipped, mirrored and shifted (all grids "
    "of a copy turned the same way, so a rule tied to a direction becomes a different rule in the copy)",
    "use_size_augmentations": "adds copies with every grid scaled up: doubled in height, width, or both",
    "use_chain_augmentations": "adds copies that are rotated or flipped and then scaled up",
    "use_repeat_augmentations": "adds copies with every grid tiled twice, side by side or one above the other",
}
STRATEGY_HELP = {
    "train_using_all_tokens": "learn to reproduce every token of each example, the inputs as well as the outputs",
    "train_using_output_tokens": "learn only the output grids, each given the examples before it and its input",
}

PROMPT = (
    "You will adapt yourself to a grid puzzle by training on its examples. Each example maps an input "
    "grid to an output grid (digits are colours).\n\n{examples}\n"
    "Choose how to train. Reply with one JSON object of two parts.\n"
    '"data_generation": true or false for each of\n{switches}\n'
    "(all false: train on the examples as given).\n"
    '"training":\n'
    '- "strategy", one of\n{strategies}\n'
    '- "learning_rate": how far each training step moves, a number above 0 and at most {max_lr} '
    "(too small learns nothing, too large forgets what the model knew);\n"
    '- "num_train_epochs": how many times to go through the training examples, a whole number from 1 to '
    "{max_epochs}.\n"
    "JSON:\n"
)


def self_edit_prompt(task: Task, style: str, max_lr: float = 1e-2, max_epochs: int = 10) -> str:
    """The prompt a policy writes its self-edit from: the demonstrations, and every option with what it does."""
    return PROMPT.format(
        examples="\n".join(example_text(p, style) for p in task.train),
        switches="\n".join(f'- "{k}": {v};' for k, v in SWITCH_HELP.items()),
        strategies="\n".join(f'  "{k}": {v};' for k, v in STRATEGY_HELP.items()),
        max_lr=f"{max_lr:g}",
        max_epochs=max_epochs,
    )


@dataclass(frozen=True)
class ArcPlan:
    valid: bool
    reason: str = ""
    families: tuple[str, ...] = ()
    strategy: str = "output"  # "all" or "output" tokens in the loss
    lr: float = 0.0
    epochs: int = 0
    raw: dict = field(default_factory=dict, compare=False)

    @property
    def settings(self) -> tuple:
        """What the plan chooses, for telling one configuration from another (the release's config key)."""
        return (self.families, self.strategy, self.lr, self.epochs)


def invalid(reason: str) -> ArcPlan:
    return ArcPlan(valid=False, reason=reason)


def first_json_object(text: str) -> dict | None:
    """The first balanced {...} in the text that parses as a JSON object (models wrap JSON in prose or fences)."""
    decoder = json.JSONDecoder()
    for start, char in enumerate(text):
        if char != "{":
            continue
        try:
            value, _ = decoder.raw_decode(text[start:])
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


def parse_self_edit(text: str, max_lr: float = 1e-2, max_epochs: int = 10) -> ArcPlan:
    data = first_json_object(text)
    if data is None:
        return invalid("no JSON object in the self-edit")
    sections = [data.get(name) or {} for name in ("data_generation", "training")]
    if not all(isinstance(section, dict) for section in sections):
        return invalid("data_generation and training must be JSON objects")
    flat = {**data, **sections[0], **sections[1]}
    missing = [k for k in (*SWITCHES, *SETTINGS) if k not in flat]
    if missing:
        return invalid(f"missing key(s): {', '.join(missing)}")
    for key in SWITCHES:
        if not isinstance(flat[key], bool):
            return invalid(f"{key} must be true or false, not {flat[key]!r}")
    if flat["strategy"] not in STRATEGIES:
        return invalid(f"unknown strategy {flat['strategy']!r}; expected {' or '.join(STRATEGIES)}")
    lr, epochs = flat["learning_rate"], flat["num_train_epochs"]
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr <= max_lr:
        return invalid(f"learning_rate {lr!r} is not a number in (0, {max_lr}]")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or not 1 <= epochs <= max_epochs:
        return invalid(f"num_train_epochs {epochs!r} is not a whole number in [1, {max_epochs}]")
    return ArcPlan(
        valid=True,
        families=tuple(f for k, f in SWITCHES.items() if flat[k]),
        strategy=STRATEGIES[flat["strategy"]],
        lr=float(lr),
        epochs=epochs,
        raw=data,
    )


def plan_json(families: tuple[str, ...], strategy: str, lr: float, epochs: int) -> str:
    """A self-edit as a policy should write it (used for fixed configurations such as the oracle)."""
    by_family = {f: k for k, f in SWITCHES.items()}
    by_strategy = {s: k for k, s in STRATEGIES.items()}
    return json.dumps({
        "data_generation": {by_family[f]: f in families for f in SWITCHES.values()},
        "training": {"strategy": by_strategy[strategy], "learning_rate": lr, "num_train_epochs": epochs},
    })  # fmt: skip
