"""DUKD's data upcycling and invertible augmentations, and DIPNet's teacher-enhanced HR targets.

Data Upcycling KD (Zhang et al., "Data Upcycling Knowledge Distillation for Image Super-Resolution")
makes extra training inputs out of each (lq, gt) pair, on which only the teacher's output is a label:
  * zoom-in: the HR patch is cut into scale x scale tiles of the LR patch's size; a tile is a valid
    LR-sized input (a crisper one than lq), and the teacher's SR of it is the target;
  * zoom-out: the LR patch downscaled once more by the scale (MATLAB bicubic) is an input whose ground
    truth is the LR patch itself (and whose teacher target is the teacher's SR of it).
Label consistency: the student sees an invertibly augmented input F(x) (colour inversion 1 - x, flips,
transpose, each with probability p, per sample) and F^-1 of its output must match the teacher's output
on the plain x.

Every random choice is drawn per sample from a generator seeded by (seed, step, dataset index), so it
does not depend on how a global batch is split over processes, and a resumed run redraws the same.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from srcore.imresize import imresize

AUG_OPS = ("invert", "hflip", "vflip", "transpose")


def sample_rngs(seed: int, step: int, indices: torch.Tensor | list[int]) -> list[np.random.Generator]:
    """One numpy generator per sample, seeded by (seed, step, dataset index)."""
    return [np.random.default_rng([seed, step, int(i)]) for i in indices]


def zoom_in(gt: torch.Tensor, scale: int, rngs: list[np.random.Generator], n_sub: int = 1) -> torch.Tensor:
    """(B, C, s*h, s*w) HR patches -> (B * n_sub, C, h, w): n_sub distinct random tiles of each HR patch,
    tile-major (all samples' first tiles, then all second tiles, ...)."""
    b, _, hh, ww = gt.shape
    h, w = hh // scale, ww // scale
    if not 1 <= n_sub <= scale * scale:
        raise ValueError(f"zoom_in n_sub must be in 1..{scale * scale} at x{scale}, got {n_sub}")
    picks = [rng.permutation(scale * scale)[:n_sub] for rng in rngs]
    tiles = []
    for k in range(n_sub):
        for i in range(b):
            ty, tx = divmod(int(picks[i][k]), scale)
            tiles.append(gt[i, :, ty * h:(ty + 1) * h, tx * w:(tx + 1) * w])
    return torch.stack(tiles)


def zoom_out(lq: torch.Tensor, scale: int) -> torch.Tensor:
    """The LR patch downscaled by `scale` with MATLAB bicubic (antialiased), no rounding or clipping."""
    return imresize(lq.float(), 1.0 / scale).to(lq.dtype)


def enhance_hr(teacher_sr_of_gt: torch.Tensor, scale: int) -> torch.Tensor:
    """DIPNet's enhanced HR: the teacher's SR of the HR patch, brought back to HR size by bicubic."""
    return imresize(teacher_sr_of_gt.float(), 1.0 / scale).clamp(0, 1)


@dataclass
class InvertibleAug:
    """Per-sample invertible augmentations; `flags[op]` is a (B,) bool tensor for each op in AUG_OPS.

    `apply` runs invert, hflip, vflip, transpose in that order; `inverse` undoes them in reverse order.
    All are involutions, and square patches keep their shape under transpose.
    """

    flags: dict[str, torch.Tensor]

    @classmethod
    def draw(cls, rngs: list[np.random.Generator], prob: float, ops: tuple[str, ...] = AUG_OPS,
             repeat: int = 1, device: str | torch.device = "cpu") -> InvertibleAug:
        """Each op on with probability `prob` per sample (ops not in `ops` off); flags are tiled `repeat`
        times along the batch (for zoom-in's tile-major batches)."""
        unknown = [o for o in ops if o not in AUG_OPS]
        if unknown:
            raise ValueError(f"unknown invertible augmentation {unknown[0]!r}; known: {', '.join(AUG_OPS)}")
        draws = np.array([rng.random(len(AUG_OPS)) < prob for rng in rngs], dtype=bool).reshape(-1, len(AUG_OPS))
        flags = {}
        for j, op in enumerate(AUG_OPS):
            on = torch.from_numpy(draws[:, j] & (op in ops))
            flags[op] = on.repeat(repeat).to(device)
        return cls(flags)

    @staticmethod
    def _op(x: torch.Tensor, op: str, on: torch.Tensor) -> torch.Tensor:
        if not bool(on.any()):
            return x
        if op == "invert":
            y = 1.0 - x
        elif op == "hflip":
            y = x.flip(-1)
        elif op == "vflip":
            y = x.flip(-2)
        else:
            y = x.transpose(-2, -1)
        return torch.where(on.view(-1, 1, 1, 1), y, x)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        for op in AUG_OPS:
            x = self._op(x, op, self.flags[op])
        return x

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        for op in reversed(AUG_OPS):
            x = self._op(x, op, self.flags[op])
        return x
