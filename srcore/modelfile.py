"""Load a model file for inference: an srnas checkpoint, a deployed `deploy.pt`, or an ONNX model.

    loaded = load_model_file("runs/q/train/best.pt", device="cpu", scale=2)
    sr = loaded.model(lr)                    # (1, 3, h, w) RGB in [0, 1] -> (1, 3, s*h, s*w)

Which loader runs is decided by the file, not by trust in its name:

* `*.onnx` -> `load_onnx`: an onnxruntime session (CPU, or CUDA when `device` is a GPU and the provider exists)
  wrapped as a callable on torch tensors; the model must take a (1, 3, H, W) float input with free H and W;
  its scale is found by running a 16 x 16 input.
* a PyTorch file is read once with `torch.load(weights_only=True)`:
  - `format: "srnas-checkpoint"` -> `srcore.modelspec.load_checkpoint_model` (spec + state dict);
    a `deploy.pt` written by tools/compress.py is such a checkpoint (`kind: "deploy"`): its spec carries
    `reparameterized` / `widths`, applied by the transform `import compress` registers (srcore.registry);
  - another file that looks deployed (`format` mentions "deploy", named deploy.pt, or holding `widths`) is a
    one-line error (it was not written by tools/compress.py);
  - anything else (e.g. a published weight file without a network spec) is a one-line error.

A wrong `scale` for the file is a one-line error naming the file and both scales.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import FORMAT, CheckpointError, load_file
from .modelspec import load_checkpoint_model, spec_scale


@dataclass
class LoadedModel:
    model: Any  # callable: (N, 3, H, W) float tensor in [0, 1] -> (N, 3, s*H, s*W)
    scale: int
    kind: str  # "checkpoint", "deploy" or "onnx"
    label: str


def load_model_file(path: str | os.PathLike, device: str | torch.device = "cpu",
                    scale: int | None = None) -> LoadedModel:
    """The network in `path` (see the module docstring), checked against `scale` when given."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        loaded = load_onnx(path, device)
    else:
        obj = load_file(path)
        fmt = str(obj.get("format", "")) if isinstance(obj, dict) else ""
        if fmt == FORMAT:
            model, ckpt = load_checkpoint_model(path, device)
            kind = "deploy" if ckpt.get("kind") == "deploy" else "checkpoint"
            loaded = LoadedModel(model, spec_scale(ckpt["spec"]), kind, str(path))
        elif "deploy" in fmt or path.name == "deploy.pt" or (isinstance(obj, dict) and "widths" in obj):
            loaded = load_deploy(path, device)
        else:
            raise CheckpointError(f"{path}: not an srnas checkpoint, deploy.pt or .onnx model (a published weight "
                                  "file has no network spec: use tools/evaluate.py --arch NAME --weights FILE)")
    if scale is not None and scale != loaded.scale:
        raise ValueError(f"--scale {scale} but {path} holds a x{loaded.scale} network")
    return loaded


def load_deploy(path: Path, device: str | torch.device = "cpu") -> LoadedModel:
    """A deployed-looking file without the srnas checkpoint header: not something tools/compress.py wrote."""
    raise CheckpointError(f"{path}: not a deploy.pt written by tools/compress.py (no '{FORMAT}' header with a "
                          "network spec); use the srnas checkpoint or the .onnx file")


class OnnxModel:
    """An onnxruntime session called like a network on torch tensors (inference only)."""

    def __init__(self, path: Path, device: str | torch.device = "cpu"):
        try:
            import onnxruntime as ort
        except ImportError:
            raise CheckpointError(f"{path}: running .onnx models needs onnxruntime (pip install onnxruntime)") \
                from None
        providers = ["CPUExecutionProvider"]
        if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"{path}: not a loadable ONNX model ({first})") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise CheckpointError(f"{path}: expected one (N, 3, H, W) input, got "
                                  f"{[(i.name, i.shape) for i in inputs]}")
        self.input = inputs[0].name
        self.path = path

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        try:
            (out, *_) = self.session.run(None, {self.input: x.detach().cpu().numpy().astype(np.float32)})
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"{self.path}: the ONNX model failed on a {tuple(x.shape)} input ({first}); it must "
                             "be exported with free height and width") from None
        return torch.from_numpy(out).to(x.device)

    def eval(self) -> OnnxModel:
        return self


def load_onnx(path: Path, device: str | torch.device = "cpu") -> LoadedModel:
    """An ONNX SR model; its scale is measured on a 16 x 16 input."""
    model = OnnxModel(path, device)
    probe = model(torch.zeros(1, 3, 16, 16))
    h, w = probe.shape[-2:]
    if probe.ndim != 4 or probe.shape[1] != 3 or h != w or h % 16:
        raise CheckpointError(f"{path}: a 16x16 input gave an output of shape {tuple(probe.shape)}, not an "
                              "RGB image enlarged by an integer scale")
    return LoadedModel(model, h // 16, "onnx", str(path))
