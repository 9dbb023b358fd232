"""The typed search config: one dataclass per section of `configs/search/*.yaml`.

Loaded strictly by `srcore.config.load_config` (unknown keys and wrong types are one-line errors);
`--set section.key=value` overrides any field. A search checkpoint stores `to_dict(config)`, and
`--resume` checks that the config it is given (if any) is the same.

Sections:
  space   the supernet: op set, cells, width, scale, shared or per-cell alphas, partial channels, fusion,
          scale-free candidates during search, input range (the DLSR space, `SpaceConfig`); with
          `space.name: esr` the efficient-SR space built from the NTIRE winners (`ESRSpaceConfig`, its own
          keys; the whole config is then an `ESRSearchConfig`, see `search_config_class`);
  data    training images, their train/validation split, patch size, batch size, validation sampling;
  loss    L1 + optional HFEN (DLSR's training loss);
  optim   the weight optimizer (Adam) and its learning-rate schedule;
  arch    the architecture optimizer (Adam), the algorithm (first_order / dlsr_reuse / dlsr_exact /
          second_order), warm-up, softmax temperature annealing, SDARTS random smoothing;
  cost    the differentiable cost term (expected params, MACs or LUT latency) as a hinge around a target;
  loop    length, logging, evaluation, checkpoints, collapse guard, seed;
  derive  how the genotype is read off the supernet at the end (argmax or perturbation-based);
  run     where and how it runs (threads, device): may change on resume.

`EXECUTION_KEYS` lists the keys that do not change what the search computes (threads, device, logging,
evaluation, checkpoints, fusion, memory format, derive): `--resume` accepts new values for those and
refuses any other change, naming the key.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Literal

from search_spaces.esr_genotype import FUSIONS, HEADS
from search_spaces.esr_genotype import SKIPS as ESR_SKIPS
from search_spaces.esr_ops import ACTS, ATTNS, CONVS
from search_spaces.ops import DLSR_PRIMITIVES, OPS
from srcore.config import ConfigError
from srcore.data import SCALES
from srcore.skip import SKIPS


@dataclass
class SpaceConfig:
    """The supernet: DLSR's two-level space (cell ops and cell-to-cell links)."""

    ops: tuple[str, ...] = DLSR_PRIMITIVES  # candidate ops of every distillation stage
    num_cells: int = 6  # cells of the supernet (the derived network has as many); DLSR: 6
    channels: int = 48  # feature channels C of every cell
    scale: int = 2  # upscaling factor: 2, 3 or 4
    shared_alphas: bool = True  # True: one set of 3 x |ops| alphas for all cells (DLSR); False: per cell
    partial_channels: int = 1  # PC-DARTS K: 1/K of the channels go through the mixed op; 1 = off
    fuse: bool = True  # fused mixed ops: the same sum in fewer, cheaper operations (nas/mixed.py)
    channels_last: bool = True  # NHWC memory format for the supernet and its inputs (faster convs on CPU)
    skip: str = "bicubic"  # image-space skip of the supernet and the derived genotype: none, nearest, bicubic
    scale_free: bool = False  # search only: every candidate's output and every link edge rescaled (no parameters)
    rgb_range: float = 1.0  # the supernet works on RGB * rgb_range (DLSR: 255); in and out stay in [0, 1]

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
        if not 0 < self.rgb_range <= 65535:
            raise ValueError(f"space.rgb_range = {self.rgb_range}: must be in (0, 65535] (1 or 255)")


@dataclass
class DataConfig:
    """Training images split into a weight part and an architecture (validation) part.

    The split is a seeded random `val_fraction` of the images, or, with `train_range` and `val_range`,
    1-based inclusive ranges of the sorted image list (DLSR: 1-3000 and 3000-3450 of DF2K).
    """

    train: str | list[str] = "builtin:train"  # folder of HR images (or HR/ inside it), a list of them, or builtin:train
    val_fraction: float = 0.25  # fraction of the training images set aside for the arch (validation) split
    train_range: tuple[int, int] | None = None  # [first, last] images (1-based, inclusive) for the weights
    val_range: tuple[int, int] | None = None  # [first, last] images for the arch split
    gt_size: int = 64  # HR patch size (LR patch = gt_size / scale)
    batch_size: int = 16  # the global batch (split evenly over DDP processes)
    repeat: int = 1  # patches per training image per epoch
    augment: bool = True  # dihedral flips and rotations of the patches
    val_sampling: Literal["epoch", "replacement"] = "epoch"  # arch batches: walk epochs, or draw with replacement
    cache: Literal["ram", "disk"] = "ram"  # decoded images in RAM, or memory-mapped from cache_dir (srcore.decoded)
    cache_dir: str | None = None  # disk cache folder (default $SRNAS_CACHE/decoded, ~/.cache/srnas/decoded)

    def __post_init__(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"data.val_fraction = {self.val_fraction}: must be in (0, 1)")
        if self.batch_size < 1 or self.repeat < 1 or self.gt_size < 2:
            raise ValueError("data: batch_size >= 1, repeat >= 1 and gt_size >= 2 are required")
        if (self.train_range is None) != (self.val_range is None):
            raise ValueError("data.train_range and data.val_range go together (or neither: val_fraction splits)")
        for key in ("train_range", "val_range"):
            r = getattr(self, key)
            if r is not None and not 1 <= r[0] <= r[1]:
                raise ValueError(f"data.{key} = {list(r)}: expected [first, last] with 1 <= first <= last")


@dataclass
class LossConfig:
    """L1 + hfen_weight * HFEN on RGB in [0, 1] (nas/loss.py).

    DLSR's L1 is on [0, 255] and its HFEN is range-free, so DLSR's 0.2 is 0.2 / 255 here.
    """

    hfen_weight: float = 0.0  # weight of the HFEN term (high-frequency error) beside L1; 0 = L1 only
    hfen_mode: Literal["per_channel", "dlsr"] = "per_channel"  # dlsr: Laplacian summed over RGB, signed max


@dataclass
class OptimConfig:
    """Weight optimizer: Adam with a schedule that is a pure function of the epoch (nothing to resume)."""

    lr: float = 5e-4  # weight optimizer (Adam) learning rate
    adam_betas: tuple[float, float] = (0.9, 0.999)  # weight Adam betas
    weight_decay: float = 0.0  # weight decay of the network weights
    schedule: Literal["constant", "multistep", "cosine"] = "constant"  # weight lr schedule (per epoch)
    milestones: tuple[int, ...] = ()  # epochs, for multistep
    gamma: float = 0.5  # multistep factor
    min_lr: float = 0.0  # cosine floor
    grad_clip: float = 0.0  # max global norm of weight gradients; 0 = off


ALGORITHMS = ("first_order", "dlsr_reuse", "dlsr_exact", "second_order")


@dataclass
class ArchConfig:
    """The architecture step (nas/architect.py) and what shapes the mixture during search.

    algorithm: first_order (DARTS, validation loss; arch step before the weight step), dlsr_exact
    (DLSR's released step: after the weight step, the train batch re-run at the new weights plus a
    validation batch), dlsr_reuse (the same sum, but the train term is the alpha gradient of the weight
    step's own backward, before the update: one forward cheaper), second_order (DARTS's unrolled step
    through the weight optimizer's actual next step, before the weight step, on the same batch).
    The mixture weights are softmax(alpha / tau), tau annealed geometrically from `tau_start` to
    `tau_end` between the end of warm-up and the last step; `smoothing` > 0 adds U(-eps, eps) noise to
    them in every weight step (SDARTS-RS, Chen & Hsieh 2020).
    """

    algorithm: Literal["first_order", "dlsr_reuse", "dlsr_exact", "second_order"] = "dlsr_exact"  # see above
    lr: float = 3e-4  # arch optimizer (Adam) learning rate
    adam_betas: tuple[float, float] = (0.5, 0.999)  # arch Adam betas
    weight_decay: float = 1e-3  # weight decay of alphas and betas
    warmup_epochs: int = 0  # weight steps only for these epochs
    every: int = 1  # one arch step every `every` weight steps
    unrolled_lr: float | None = None  # second order: a plain SGD virtual step of this size; null = the optimizer's
    hvp_r: float = 1e-2  # second order: the finite-difference step is hvp_r / |v| (DARTS: 0.01)
    grad_clip: float = 0.0  # max norm of the arch gradient; 0 = off
    init_std: float = 1e-3  # alphas and betas start as N(0, init_std^2)
    tau_start: float = 1.0  # softmax temperature of the op mixture at the end of warm-up
    tau_end: float = 1.0  # ... and at the last step (geometric in between); 1 and 1 = plain DARTS
    smoothing: float = 0.0  # SDARTS-RS: uniform noise of this half-width on the mixture weights in weight steps

    def __post_init__(self) -> None:
        if self.every < 1 or self.warmup_epochs < 0 or self.hvp_r <= 0:
            raise ValueError("arch: every >= 1, warmup_epochs >= 0 and hvp_r > 0 are required")
        if self.tau_start <= 0 or self.tau_end <= 0 or self.smoothing < 0:
            raise ValueError("arch: tau_start > 0, tau_end > 0 and smoothing >= 0 are required")


@dataclass
class CostConfig:
    """Penalty `weight * ramp * relu(E / target - 1)` (hinge) or `weight * ramp * |E / target - 1|`.

    E is the expected cost of the derived network under the mixture weights (`kind`: params, MACs at
    `input_size`, or latency in ms at `input_size` from a per-op table measured on the search device);
    `target` is absolute, in the unit of `kind`. The hinge pulls only while E is above the target (a
    bare linear pull would drive every edge to the cheapest op); `two_sided` also pushes up from below.
    `ramp` goes linearly from 0 to 1 over `ramp_epochs` after the warm-up (0: at once).
    With `reference` (esr space only: a named genotype or a genotype file of the space, e.g. span_x4),
    `target` is a fraction of that genotype's cost in the search's own table, resolved when the table is
    built: a latency target then moves with the machine's speed instead of being a number of milliseconds
    measured some other time.
    """

    kind: Literal["none", "params", "macs", "latency"] = "none"  # expected params, MACs or latency
    weight: float = 0.0  # weight of the cost term in the arch loss
    target: float | None = None  # the hinge's target cost (unit of `kind`)
    mode: Literal["hinge", "two_sided"] = "hinge"  # hinge: penalize only above target; two_sided: both sides
    ramp_epochs: float = 0.0  # epochs over which the cost weight ramps up after the arch warm-up
    input_size: tuple[int, int] = (64, 64)  # LR size (H, W) for MACs and latency
    latency_repeats: int = 5  # timed runs per op (median) when measuring the latency table
    reference: str | None = None  # esr: target = this fraction of the reference genotype's cost in the table

    def __post_init__(self) -> None:
        if self.kind != "none" and (self.target is None or self.weight <= 0):
            raise ValueError(f"cost.kind = {self.kind} needs cost.target (in its unit) and cost.weight > 0")
        if self.target is not None and self.target <= 0:
            raise ValueError(f"cost.target = {self.target}: must be > 0")
        if self.ramp_epochs < 0:
            raise ValueError(f"cost.ramp_epochs = {self.ramp_epochs}: must be >= 0")


@dataclass
class LoopConfig:
    epochs: int = 1  # passes over the training patches (steps = epochs x batches per epoch)
    seed: int = 0  # random seed (data order, patches, initial weights)
    log_every: int = 10  # weight steps between progress updates and alpha_history.jsonl lines
    eval_every: int = 50  # weight steps between PSNR evaluations on fixed validation patches; 0 = off
    eval_patches: int = 16  # validation patches scored at each evaluation
    checkpoint_every: int = 100  # weight steps between atomic checkpoints (also at the end and on Ctrl-C)
    collapse_check: bool = True  # every log step: warn (or stop) when the current genotype is degenerate
    decided_prob: float = 0.5  # an edge's choice is decided when its op carries at least this mixture weight
    collapse_action: Literal["warn", "stop"] = "warn"  # or stop the search at a collapse

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.log_every < 1 or self.eval_every < 0 or self.checkpoint_every < 0:
            raise ValueError("loop: epochs >= 1, log_every >= 1, eval_every >= 0 and checkpoint_every >= 0 "
                             "are required")
        if not 0.0 < self.decided_prob <= 1.0:
            raise ValueError(f"loop.decided_prob = {self.decided_prob}: must be in (0, 1]")


@dataclass
class DeriveConfig:
    """How the genotype is read off the supernet (nas/derive.py, nas/select.py).

    argmax: each edge keeps its op of largest alpha, each cell k >= 3 its two inputs of largest beta.
    perturbation: Wang et al. (ICLR 2021): edge by edge, the op whose removal from the mixture raises
    the validation loss most is kept (then `tune_steps` weight steps with the decided edges fixed), and
    each cell keeps the two inputs whose removal hurts most; the loss is measured on `eval_batches`
    validation batches.
    """

    method: Literal["argmax", "perturbation"] = "argmax"  # how the genotype is read off the supernet (see above)
    exclude: tuple[str, ...] = ()  # ops the derivation may not pick (if another remains)
    eval_batches: int = 4  # perturbation: validation batches per measurement
    tune_steps: int = 0  # perturbation: weight steps after each decided edge

    def __post_init__(self) -> None:
        if self.eval_batches < 1 or self.tune_steps < 0:
            raise ValueError("derive: eval_batches >= 1 and tune_steps >= 0 are required")


@dataclass
class RunConfig:
    """Execution only (may change on resume): torch CPU threads (0 = torch's default) and device."""

    threads: int = 0  # torch CPU threads (0: torch's default)
    device: str = "cpu"  # cpu, cuda, cuda:1, ...

    def __post_init__(self) -> None:
        if self.threads < 0:
            raise ValueError(f"run.threads = {self.threads}: must be >= 0")


@dataclass
class SearchConfig:
    space: SpaceConfig = field(default_factory=SpaceConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    arch: ArchConfig = field(default_factory=ArchConfig)
    cost: CostConfig = field(default_factory=CostConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    derive: DeriveConfig = field(default_factory=DeriveConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        if self.data.gt_size % self.space.scale:
            raise ValueError(f"data.gt_size = {self.data.gt_size} must be divisible by space.scale = "
                             f"{self.space.scale}")
        if self.cost.reference is not None:
            raise ValueError("cost.reference: a target relative to a reference genotype is implemented for the esr "
                             "space; give the dlsr space an absolute cost.target")
        unknown = [name for name in self.derive.exclude if name not in self.space.ops]
        if unknown:
            raise ValueError(f"derive.exclude: {unknown} not in space.ops ({', '.join(self.space.ops)})")


@dataclass
class ESRSpaceConfig:
    """The `esr` supernet (nas/esr_supernet.py): per block a mixture over conv types, activations and
    attentions, a keep/drop gate per block (the depth), softmax(beta) weights over the taps of the final
    fusion (top-k kept at derive) and a mixture over the image-space paths. A choice with one candidate is
    fixed (no architecture parameter). Everything else (width, head, body conv, fusion, biases, input
    normalisation) is fixed per search. See search_spaces/esr_genotype.py for what each choice means.
    """

    name: Literal["esr"] = "esr"  # the search space: esr (this one) or dlsr (the default when absent)
    scale: int = 4  # upscaling factor: 2, 3 or 4
    channels: int = 28  # feature channels of every block (SPAN: 28 at x4)
    num_blocks: int = 6  # blocks of the supernet (the most a derived network has)
    head: str = "conv3xc"  # conv3x3 | conv3xc | none
    body: str = "conv3xc"  # none or a conv type (SPAN's conv_2), a tap candidate
    fusion: str = "conv1x1"  # conv1x1 | dwpw
    convs: tuple[str, ...] = tuple(CONVS)  # conv types of every block (all three convs of a block share one)
    acts: tuple[str, ...] = tuple(ACTS)  # activations of every block: silu | relu | lrelu (LeakyReLU 0.05)
    attns: tuple[str, ...] = tuple(ATTNS)  # attentions: none | spab (sigmoid(x) - 0.5) | guide (1x1 map) | esa
    skips: tuple[str, ...] = ESR_SKIPS  # image-space paths
    depth: bool = True  # a keep/drop gate per block (FBNet's skip candidate); false: every block is kept
    taps: int = 4  # taps the derived fusion keeps (SPAN: 4)
    tap_c1: bool = True  # block<i>.c1 (a block's activated first conv) are tap candidates too (SPAN taps one)
    bias: bool = True  # convolutions with biases
    input_scale: float = 1.0  # the network sees (x - input_mean) * input_scale (SPANV2: 1, mean 0)
    input_mean: tuple[float, float, float] = (0.0, 0.0, 0.0)  # per-channel mean subtracted from the input
    fuse: bool = True  # each conv mixture runs as one 3x3 conv with the mixed kernel (exact; same gradients)
    scale_free: bool = False  # search only: every conv candidate's output and every tap edge rescaled to RMS
    channels_last: bool = True  # NHWC memory format for the supernet and its inputs (faster convs on CPU)

    def __post_init__(self) -> None:
        def check_list(key: str, values, known) -> None:
            if not values:
                raise ValueError(f"space.{key}: give at least one candidate")
            for v in values:
                if v not in known:
                    raise ValueError(f"space.{key}: unknown {v!r}; known: {', '.join(known)}")
            if len(set(values)) != len(values):
                raise ValueError(f"space.{key}: a candidate is listed twice: {list(values)}")

        check_list("convs", self.convs, tuple(CONVS))
        check_list("acts", self.acts, tuple(ACTS))
        check_list("attns", self.attns, tuple(ATTNS))
        check_list("skips", self.skips, ESR_SKIPS)
        for key, value, known in (("head", self.head, HEADS), ("body", self.body, ("none", *CONVS)),
                                  ("fusion", self.fusion, FUSIONS)):
            if value not in known:
                raise ValueError(f"space.{key} = {value!r}: must be one of {', '.join(known)}")
        if self.head == "none" and all(c == "rrrb" for c in self.convs):
            raise ValueError("space.convs: with head none, block 1 maps RGB -> C and needs a conv type other than rrrb")
        if self.scale not in SCALES:
            raise ValueError(f"space.scale = {self.scale}: must be one of {list(SCALES)}")
        if self.channels < 4 or self.num_blocks < 1:
            raise ValueError("space: channels >= 4 and num_blocks >= 1 are required")
        if not 1 <= self.taps:
            raise ValueError(f"space.taps = {self.taps}: must be >= 1")
        if not 0 < self.input_scale <= 65535 or not all(0 <= v <= 1 for v in self.input_mean):
            raise ValueError("space: input_scale in (0, 65535] and input_mean in [0, 1] are required")

    def candidates(self) -> tuple[str, ...]:
        """Every candidate name of every choice (derive.exclude names some of them)."""
        return tuple(dict.fromkeys((*self.convs, *self.acts, *self.attns, *self.skips)))


@dataclass
class ESRSearchConfig(SearchConfig):
    """A search of the `esr` space: the sections of `SearchConfig`, with `space` an `ESRSpaceConfig`."""

    space: ESRSpaceConfig = field(default_factory=ESRSpaceConfig)

    def __post_init__(self) -> None:
        if self.data.gt_size % self.space.scale:
            raise ValueError(f"data.gt_size = {self.data.gt_size} must be divisible by space.scale = "
                             f"{self.space.scale}")
        unknown = [name for name in self.derive.exclude if name not in self.space.candidates()]
        if unknown:
            raise ValueError(f"derive.exclude: {unknown} are not candidates of the esr space")
        if self.derive.method != "argmax":
            raise ValueError(f"derive.method = {self.derive.method}: the esr space derives by argmax (perturbation "
                             "selection is implemented for the dlsr space)")
        if self.cost.reference is not None:
            from nas.esr_cost import reference_genotype  # (nas.esr_cost imports this module)

            reference_genotype(self.cost.reference, self.space)


def search_config_class(data: dict, source: str = "config") -> type[SearchConfig]:
    """The config class of a search config mapping: `ESRSearchConfig` when `space.name` is esr, else
    `SearchConfig` (the DLSR space; `space.name: dlsr` may be written and is dropped)."""
    space = data.get("space") if isinstance(data, dict) else None
    name = space.get("name", "dlsr") if isinstance(space, dict) else "dlsr"
    if name == "esr":
        return ESRSearchConfig
    if name != "dlsr":
        raise ConfigError(f"{source}: space.name = {name!r}: unknown search space; known: dlsr, esr")
    if isinstance(space, dict):
        space.pop("name", None)
    return SearchConfig


def search_config_from_dict(data: dict, source: str = "config") -> SearchConfig:
    """A search config (either space) from a plain mapping, e.g. the one stored in a search checkpoint."""
    from srcore.config import from_dict

    data = copy.deepcopy(data)
    return from_dict(search_config_class(data, source), data, source)


# Keys (dotted, or a whole section) that may change when a search is resumed: they change how it runs,
# is logged, evaluated, checkpointed or derived, not the weights and alphas it computes (fusion and the
# memory format change float rounding only).
EXECUTION_KEYS = ("run", "derive", "space.fuse", "space.channels_last", "data.cache", "data.cache_dir",
                  "loop.log_every", "loop.eval_every",
                  "loop.eval_patches", "loop.checkpoint_every", "loop.collapse_check", "loop.decided_prob",
                  "loop.collapse_action", "cost.latency_repeats")


def is_execution_key(key: str) -> bool:
    """True if the dotted config key `key` may change on resume (see EXECUTION_KEYS)."""
    return any(key == k or key.startswith(k + ".") for k in EXECUTION_KEYS)
