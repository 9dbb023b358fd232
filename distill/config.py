"""The typed config of a distillation run (`tools/train.py --config FILE|PRESET`), loaded strictly.

A run trains one student from one or more frozen teachers. Sections:
  student   what is trained: a genotype (YAML file or named, e.g. dlsr_x2, optionally re-sized) or a zoo arch
  teacher   a list of frozen teachers ("anchors"); the first one also gives the features; [] for no KD.
            A teacher is a registered name (`{name: rlfn_s_x2}`, srcore/weights.py finds the file), a zoo
            arch with a weight file, or an srnas checkpoint
  data      training patches (folder(s) or builtin:train), global batch, teacher-output cache
  optim     Adam/AdamW, gradient clipping, EMA of the weights
  schedule  linear warm-up then cosine, multistep or constant
  loss      the named weighted terms (see distill/losses.py for every `kind` and its params)
  stages    DIPNet-style progressive learning: from a step on, another HR patch size and loss weights
  val       benchmark folders scored every N steps (best.pt is chosen by mean PSNR-Y); before training, the
            teacher is scored on them too and used for KD only if it beats bicubic by val.kd_gate_db
  loop      steps, seed, logging/saving cadence, channels_last, mixed precision (CUDA only)
  pretrain_teacher  how tools/train.py trains (and caches) a teacher when `teacher` is empty (quickstart)

Every section is a dataclass; unknown keys and wrong types are errors naming the file and key
(`srcore.config`). Loss params are checked by the loss that reads them. Paths may start with
`${SRNAS_SHARED}` (srcore/paths.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from srcore.config import ConfigError, check_min, check_range

from .losses import KINDS, needs_teacher


@dataclass
class StudentConfig:
    genotype: str | None = None  # genotype YAML file or named genotype (search_spaces/genotypes/)
    arch: str | None = None  # or any registered zoo architecture
    scale: int = 2  # upscaling factor: 2, 3 or 4
    channels: int | None = None  # genotype only: override the width C
    num_cells: int | None = None  # genotype only: keep the first N cells (and their input links)
    rgb_range: float = 1.0  # genotype only: a student trained from scratch works on [0, 1]
    skip: str | None = None  # genotype only: override the image-space skip (none, nearest, bicubic)
    kwargs: dict[str, Any] = field(default_factory=dict)  # arch only: factory keyword arguments
    checkpoint: str | None = None  # or fine-tune an srnas checkpoint (its spec and weights; e.g. a pruned net)

    def __post_init__(self):
        if sum(x is not None for x in (self.genotype, self.arch, self.checkpoint)) != 1:
            raise ConfigError("student: give exactly one of 'genotype', 'arch' or 'checkpoint'")


@dataclass
class TeacherConfig:
    name: str | None = None  # registered pretrained weights (srcore/weights.py), e.g. rlfn_s_x2; or ...
    arch: str | None = None  # ... a zoo architecture with official weights ...
    weights: str | None = None  # ... in this file (with `name`: an explicit file instead of the lookup)
    checkpoint: str | None = None  # or an srnas checkpoint (e.g. a teacher trained by quickstart)
    weight: float = 1.0  # this anchor's share in output_kd (multi-anchor distillation)
    trained_here: bool = False  # set by tools/train.py for its pretrain_teacher: a weak one is dropped, not an error

    def __post_init__(self):
        given = [k for k in ("name", "arch", "checkpoint") if getattr(self, k) is not None]
        if len(given) != 1 or (self.arch is not None and self.weights is None):
            raise ConfigError("teacher: give 'name' (registered weights, e.g. rlfn_s_x2), 'arch' and 'weights', "
                              f"or 'checkpoint'; got {', '.join(given) or 'none of them'}")


@dataclass
class DataConfig:
    train: str | list[str] = "builtin:train"  # HR folder (or ROOT with HR/), a list of them, or builtin:train
    gt_size: int = 64  # HR patch side
    batch_size: int = 16  # global batch (split evenly over DDP processes)
    repeat: int = 1  # patches per image per epoch
    augment: bool = True  # dihedral flips/rotations (srcore.data.PatchDataset)
    num_workers: int = 0  # DataLoader worker processes (0: load in the training process)
    fixed_patches: bool = False  # same patches every epoch (epoch 0's); lets the teacher cache hit
    cache_teacher: bool = False  # cache teacher SR outputs per patch (needs fixed_patches)
    cache: Literal["ram", "disk"] = "ram"  # decoded images in RAM, or memory-mapped from cache_dir (srcore.decoded)
    cache_dir: str | None = None  # disk cache folder (default $SRNAS_CACHE/decoded, ~/.cache/srnas/decoded)

    def __post_init__(self):
        check_min("data", self, gt_size=2, batch_size=1, repeat=1, num_workers=0)


@dataclass
class OptimConfig:
    name: Literal["adam", "adamw"] = "adam"  # optimizer
    lr: float = 5e-4  # peak learning rate
    betas: tuple[float, float] = (0.9, 0.999)  # Adam betas
    weight_decay: float = 0.0  # decoupled (adamw) or L2 (adam) weight decay
    grad_clip: float = 0.0  # max global grad norm; 0 = off
    ema: float = 0.0  # EMA decay of the student weights (e.g. 0.999); 0 = off

    def __post_init__(self):
        if self.lr <= 0:
            raise ConfigError(f"optim.lr = {self.lr}: must be > 0")
        for i, b in enumerate(self.betas):
            if not 0 <= b < 1:
                raise ConfigError(f"optim.betas[{i}] = {b}: must be in [0, 1)")
        check_min("optim", self, weight_decay=0, grad_clip=0)
        check_range("optim", self, "ema", 0, 1, hi_open=True)


@dataclass
class ScheduleConfig:
    name: Literal["cosine", "multistep", "constant"] = "cosine"  # learning-rate schedule after the warm-up
    warmup_steps: int = 0  # linear warm-up from 0 to optim.lr
    min_lr: float = 1e-7  # cosine floor
    milestones: list[int] = field(default_factory=list)  # multistep: steps where lr *= gamma
    gamma: float = 0.5  # multistep: lr factor at each milestone

    def __post_init__(self):
        check_min("schedule", self, warmup_steps=0, min_lr=0)
        if self.gamma <= 0:
            raise ConfigError(f"schedule.gamma = {self.gamma}: must be > 0")
        if any(m < 0 for m in self.milestones):
            raise ConfigError(f"schedule.milestones = {self.milestones}: steps must be >= 0")


@dataclass
class LossTerm:
    name: str  # unique label; logged as loss/<name>
    kind: str  # one of distill.losses.KINDS
    weight: float = 1.0
    student: list[str] = field(default_factory=list)  # feature terms: student module paths
    teacher: list[str] = field(default_factory=list)  # feature terms: teacher module paths (same count)
    params: dict[str, Any] = field(default_factory=dict)  # kind-specific, checked by the loss

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ConfigError(f"loss {self.name}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if len(self.student) != len(self.teacher):
            raise ConfigError(f"loss {self.name}: {len(self.student)} student paths but "
                              f"{len(self.teacher)} teacher paths")


@dataclass
class StageConfig:
    start: int  # first step of this stage
    gt_size: int | None = None  # HR patch side from here on (progressive learning)
    weights: dict[str, float] = field(default_factory=dict)  # loss name -> weight from here on

    def __post_init__(self):
        check_min("stages", self, start=0, gt_size=2)


@dataclass
class ValConfig:
    data: list[str] = field(default_factory=list)  # benchmark folders or 'builtin'
    every: int = 0  # steps between validations (0: only at the end, if data is given)
    max_images: int = 0  # score only the first N images of each set (0: all)
    kd_gate_db: float | None = 0.2  # a teacher must beat bicubic by this (mean PSNR-Y on `data`); null: no check

    def __post_init__(self):
        check_min("val", self, every=0, max_images=0)


@dataclass
class LoopConfig:
    steps: int = 1000  # training steps (optimizer updates)
    seed: int = 0  # random seed (patches, order, initial weights)
    log_every: int = 50  # steps between log lines (metrics.jsonl and the console)
    save_every: int = 0  # steps between last.pt saves (0: only at validation and at the end)
    channels_last: bool = False  # NHWC memory format (faster convs on some CPUs/GPUs)
    amp: bool = True  # mixed precision; used on CUDA only
    amp_dtype: Literal["bfloat16", "float16"] = "bfloat16"  # autocast dtype with amp on CUDA
    deterministic: bool = True  # torch.use_deterministic_algorithms (bit-identical resume on CPU)
    max_bad_steps: int = 10  # stop after this many steps in a row with non-finite gradients (each is skipped)

    def __post_init__(self):
        check_min("loop", self, steps=1, seed=0, log_every=1, save_every=0)


@dataclass
class PretrainTeacherConfig:
    arch: str = "rlfn_s"  # zoo architecture of the teacher trained here
    kwargs: dict[str, Any] = field(default_factory=dict)  # its factory keyword arguments (e.g. {nf: 16, num_blocks: 2})
    steps: int = 1000  # training steps of the teacher
    lr: float = 5e-4  # its peak learning rate (cosine schedule, L1 loss)

    def __post_init__(self):
        check_min("pretrain_teacher", self, steps=1)
        if self.lr <= 0:
            raise ConfigError(f"pretrain_teacher.lr = {self.lr}: must be > 0")


@dataclass
class TrainConfig:
    student: StudentConfig
    # frozen teachers ({name}, {arch, weights} or {checkpoint}); [] = no KD
    teacher: list[TeacherConfig] = field(default_factory=list)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: list[LossTerm] = field(default_factory=lambda: [LossTerm("l1", "l1")])  # named weighted terms
    stages: list[StageConfig] = field(default_factory=list)  # progressive learning: [{start, gt_size, weights}]
    val: ValConfig = field(default_factory=ValConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    pretrain_teacher: PretrainTeacherConfig | None = None  # train a teacher here when `teacher` is []

    def __post_init__(self):
        names = [t.name for t in self.loss]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"loss: names must be unique, {dup[0]!r} is used twice")
        if not self.loss:
            raise ConfigError("loss: at least one term is needed")
        for st in self.stages:
            unknown = [k for k in st.weights if k not in names]
            if unknown:
                raise ConfigError(f"stages (start {st.start}): weight for unknown loss {unknown[0]!r} "
                                  f"(losses: {', '.join(names)})")
        starts = [st.start for st in self.stages]
        if starts != sorted(starts) or len(set(starts)) != len(starts):
            raise ConfigError(f"stages: start steps must increase, got {starts}")
        if self.data.cache_teacher and not self.data.fixed_patches:
            raise ConfigError("data.cache_teacher needs data.fixed_patches: true (patches change every epoch "
                              "otherwise, so a cached teacher output would never be reused)")

    def needs_teacher(self) -> bool:
        return any(needs_teacher(t.kind) for t in self.loss)
