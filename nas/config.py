"""The typed search config: one dataclass per section of `configs/search/*.yaml`.

Loaded strictly by `srcore.config.load_config` (unknown keys and wrong types are one-line errors);
`--set section.key=value` overrides any field. A search checkpoint stores `to_dict(config)`, and
`--resume` checks that the config it is given (if any) is the same.

Sections:
  space  the supernet: op set, cells, width, scale, shared or per-cell alphas, partial channels, fusion;
  data   training images, their train/validation split, patch size, batch size;
  loss   L1 + optional HFEN (DLSR's training loss);
  optim  the weight optimizer (Adam) and its learning-rate schedule;
  arch   the architecture optimizer (Adam), the algorithm (first_order / dlsr / second_order), warm-up;
  cost   the differentiable cost term (expected params, MACs or LUT latency), its target and weight;
  loop   length, logging, evaluation, checkpoints, collapse guard, seed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from search_spaces.ops import DLSR_PRIMITIVES, OPS
from srcore.data import SCALES
from srcore.skip import SKIPS


@dataclass
class SpaceConfig:
    """The supernet: DLSR's two-level space (cell ops and cell-to-cell links)."""

    ops: tuple[str, ...] = DLSR_PRIMITIVES  # candidate ops of every distillation stage
    num_cells: int = 6
    channels: int = 48
    scale: int = 2
    shared_alphas: bool = True  # True: one set of 3 x |ops| alphas for all cells (DLSR); False: per cell
    partial_channels: int = 1  # PC-DARTS K: 1/K of the channels go through the mixed op; 1 = off
    fuse: bool = True  # fused mixed ops: the same sum in fewer, cheaper operations (nas/mixed.py)
    channels_last: bool = True  # NHWC memory format for the supernet and its inputs (faster convs on CPU)
    skip: str = "bicubic"  # image-space skip of the supernet and the derived genotype: none, nearest, bicubic

    def __post_init__(self) -> None:
        if self.skip not in SKIPS:
            raise ValueError(f"space.skip = {self.skip!r}: must be one of {', '.join(SKIPS)}")
        if not self.ops:
            raise ValueError("space.ops: give at least one op")
        for name in self.ops:
            if name not in OPS:
                raise ValueError(f"space.ops: unknown op {name!r}; known ops: {', '.join(OPS)}")
        if len(set(self.ops)) != len(self.ops):
            raise ValueError(f"space.ops: an op is listed twice: {list(self.ops)}")
        if self.num_cells < 3:
            raise ValueError(f"space.num_cells = {self.num_cells}: need >= 3 (links are searched from cell 3)")
        if self.channels < 4 or self.channels % 2:
            raise ValueError(f"space.channels = {self.channels}: must be an even integer >= 4")
        if self.scale not in SCALES:
            raise ValueError(f"space.scale = {self.scale}: must be one of {list(SCALES)}")
        if self.partial_channels < 1 or self.channels % self.partial_channels:
            raise ValueError(f"space.partial_channels = {self.partial_channels}: must be >= 1 and divide "
                             f"space.channels = {self.channels}")


@dataclass
class DataConfig:
    train: str = "builtin:train"  # folder of HR images (or HR/ inside it), or builtin:train
    val_fraction: float = 0.25  # fraction of the training images set aside for the arch (validation) split
    gt_size: int = 64  # HR patch size (LR patch = gt_size / scale)
    batch_size: int = 16
    repeat: int = 1  # patches per training image per epoch
    augment: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"data.val_fraction = {self.val_fraction}: must be in (0, 1)")
        if self.batch_size < 1 or self.repeat < 1 or self.gt_size < 2:
            raise ValueError("data: batch_size >= 1, repeat >= 1 and gt_size >= 2 are required")


@dataclass
class LossConfig:
    hfen_weight: float = 0.0  # DLSR: L1 + 0.2 * HFEN


@dataclass
class OptimConfig:
    """Weight optimizer: Adam with a schedule that is a pure function of the epoch (nothing to resume)."""

    lr: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    schedule: Literal["constant", "multistep", "cosine"] = "constant"
    milestones: tuple[int, ...] = ()  # epochs, for multistep
    gamma: float = 0.5  # multistep factor
    min_lr: float = 0.0  # cosine floor
    grad_clip: float = 0.0  # max global norm of weight gradients; 0 = off


@dataclass
class ArchConfig:
    algorithm: Literal["first_order", "dlsr", "second_order"] = "dlsr"
    lr: float = 3e-4
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 1e-3
    warmup_epochs: int = 0  # weight steps only for these epochs
    every: int = 1  # one arch step every `every` weight steps
    unrolled_lr: float | None = None  # second order: xi of the virtual step; null = current weight lr
    hvp_r: float = 1e-2  # second order: the finite-difference step is hvp_r / |v| (DARTS: 0.01)
    grad_clip: float = 0.0  # max norm of the arch gradient; 0 = off
    init_std: float = 1e-3  # alphas and betas start as N(0, init_std^2)

    def __post_init__(self) -> None:
        if self.every < 1 or self.warmup_epochs < 0 or self.hvp_r <= 0:
            raise ValueError("arch: every >= 1, warmup_epochs >= 0 and hvp_r > 0 are required")


@dataclass
class CostConfig:
    """Penalty `weight * E[cost] / ref` (linear) or `weight * relu(E[cost] / target - 1)` (hinge).

    E[cost] is the expected cost of the derived network under softmax(alpha) (`kind`: params, MACs at
    `input_size`, or latency in ms at `input_size` from a per-op table measured on the search device).
    With `target` (absolute, in the unit of `kind`), ref = target; without, ref = the cost of the
    searched stages when every stage takes its most expensive op (DLSR's normalised parameter term).
    """

    kind: Literal["none", "params", "macs", "latency"] = "none"
    weight: float = 0.0
    target: float | None = None
    mode: Literal["linear", "hinge"] = "linear"
    input_size: tuple[int, int] = (64, 64)  # LR size (H, W) for MACs and latency
    latency_repeats: int = 5  # timed runs per op (median) when measuring the latency table

    def __post_init__(self) -> None:
        if self.mode == "hinge" and self.target is None and self.kind != "none":
            raise ValueError("cost.mode = hinge needs cost.target")
        if self.target is not None and self.target <= 0:
            raise ValueError(f"cost.target = {self.target}: must be > 0")


@dataclass
class LoopConfig:
    epochs: int = 1
    seed: int = 0
    log_every: int = 10  # weight steps between progress updates and alpha_history.jsonl lines
    eval_every: int = 50  # weight steps between PSNR evaluations on fixed validation patches; 0 = off
    eval_patches: int = 16
    checkpoint_every: int = 100  # weight steps between atomic checkpoints (also at the end and on Ctrl-C)
    collapse_check: bool = True
    collapse_min_prob: float = 0.3  # an edge is "taken" by an op whose softmax weight is at least this
    collapse_action: Literal["warn", "stop"] = "warn"

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.log_every < 1 or self.eval_every < 0 or self.checkpoint_every < 0:
            raise ValueError("loop: epochs >= 1, log_every >= 1, eval_every >= 0 and checkpoint_every >= 0 "
                             "are required")


@dataclass
class SearchConfig:
    space: SpaceConfig = field(default_factory=SpaceConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    arch: ArchConfig = field(default_factory=ArchConfig)
    cost: CostConfig = field(default_factory=CostConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)

    def __post_init__(self) -> None:
        if self.data.gt_size % self.space.scale:
            raise ValueError(f"data.gt_size = {self.data.gt_size} must be divisible by space.scale = "
                             f"{self.space.scale}")
