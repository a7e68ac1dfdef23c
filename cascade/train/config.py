"""What a training run is told (TrainConfig), what it reads (TrainData) and what it reports (TrainResult)."""

from __future__ import annotations

from dataclasses import dataclass, field

from cascade.models.hub import DEFAULT_ENCODER
from cascade.train.data import DevQuery, Example
from cascade.train.pseudo import KINDS


@dataclass
class TrainConfig:
    out: str
    base: str = DEFAULT_ENCODER
    loss: str = "listwise"
    negatives: int = 7
    batch_queries: int = 8
    grad_accum: int = 1
    lr: float = 3e-5
    head_lr: float | None = None  # pooler + classifier; None: 1e-3 when the head is freshly initialised, else lr
    epochs: float = 1.0
    max_steps: int | None = None
    warmup: float = 0.1
    max_length: int = 256
    eval_every: int = 50
    patience: int = 4
    mine_depth: int = 30
    skip_top: int = 0
    max_negatives: int | None = None  # hardest negatives kept per query (bounds teacher scoring)
    easy_negatives: int = 0  # random corpus passages added to each query's negative pool
    max_positives: int | None = None  # judged positives kept per query (bounds teacher scoring on dense qrels)
    dev_fraction: float = 0.1
    max_dev_queries: int | None = None  # per dataset: bounds the cost of each dev evaluation
    labels: bool = True  # False: read no qrels at all; train and select on pseudo-queries (label-free adaptation)
    pseudo_queries: int = 0  # per dataset: pseudo-queries made from its corpus (cascade/train/pseudo.py)
    pseudo_kinds: tuple[str, ...] = KINDS
    llm_url: str | None = None  # an OpenAI-compatible endpoint that writes pseudo-queries (kind "llm", added when set)
    llm_model: str | None = None
    pseudo_keep_top: int = 20  # consistency filter: the source must be in the first stage's top N
    pseudo_skip_top: int = 3  # hard negatives for pseudo-queries start below the first stage's top N
    source_weights: dict[str, float] = field(default_factory=dict)  # per source ("scifact", "pseudo:scifact"): 1.0
    seed: int = 13
    device: str | None = None
    precision: str = "auto"
    resume: bool = False
    teachers: tuple[str, ...] = ()  # distillation: the models whose (ensembled) scores the student learns
    distill_loss: str = "margin-mse"
    label_weight: float = 0.0  # distillation: share of the label loss mixed into the teacher loss
    layers: int | None = None  # keep this many of the base model's layers (a student)
    save_dtype: str = "fp32"  # bf16 halves the folder (what the bundled model ships as)
    late_dim: int | None = None  # late interaction: projection size for a base without one (default 128)
    command: str = "Python API (cascade.train.trainer)"


@dataclass
class TrainResult:
    steps: int
    best_step: int
    best_dev_ndcg: float  # the selection metric: mean over dev sources of the blended cascade's nDCG@10
    first_stage_dev_ndcg: float  # the same mean for the first stage alone
    seconds: float
    history: list[dict] = field(default_factory=list)
    best_dev: dict[str, dict[str, float]] = field(default_factory=dict)  # per source: first_stage, alone, blended


@dataclass
class TrainData:
    examples: list[Example]
    dev: list[DevQuery]
    sources: list[dict]
