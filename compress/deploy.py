"""Deployment files of a (compressed) network: deploy.pt, TorchScript, ONNX, INT8 ONNX; and checks of each.

* `deploy.pt`: an srnas checkpoint (spec + `reparam`/`widths` + state dict), read with weights_only=True and
  rebuilt by `srcore.modelspec.load_checkpoint_model` like any other checkpoint: nothing is unpickled.
* TorchScript: `torch.jit.trace` of the eval-mode network (all our networks are straight-line code; shapes
  are traced symbolically, so other input sizes work).
* ONNX: the TorchScript-based exporter (`dynamo=False`: the dynamo exporter needs onnxscript), opset 17, batch,
  height and width dynamic, input `lq` and output `sr` in RGB [0, 1].
* `OnnxModule`: an onnxruntime session behind an nn.Module interface, so `srcore.evaluation.evaluate_model`,
  `tools/evaluate.py --onnx` and the benches score and time it like a PyTorch network.
* INT8: onnxruntime static quantization (QDQ, per-channel weights, MinMax calibration on LR training patches).

onnx and onnxruntime are imported lazily: without them only the ONNX functions fail (with a clear message).
"""
from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from srcore.checkpoint import CheckpointError, save_checkpoint
from srcore.data import BenchmarkSet
from srcore.evaluation import score, sr_to_uint8
from srcore.imageio import to_tensor

OPSET = 17


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise CheckpointError("ONNX needs onnxruntime and onnx: pip install 'srnas[deploy]' "
                              "(or pip install onnx onnxruntime)") from None
    return onnxruntime


# --- deploy.pt and TorchScript ---------------------------------------------------------------------------


def save_deploy(path: str | os.PathLike, model: nn.Module, spec: dict, metrics: dict | None = None,
                config: dict | None = None) -> Path:
    sd = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_checkpoint(path, state_dict=sd, spec=spec, config=config, metrics=metrics, kind="deploy")
    return Path(path)


@torch.no_grad()
def export_torchscript(model: nn.Module, path: str | os.PathLike, example: torch.Tensor) -> Path:
    model = model.eval()
    with warnings.catch_warnings():  # TorchScript is deprecated in torch >= 2.10 but still the C++ deployment path
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(model, example, check_trace=False)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            traced.save(str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# --- ONNX ------------------------------------------------------------------------------------------------


@torch.no_grad()
def export_onnx(model: nn.Module, path: str | os.PathLike, example: torch.Tensor) -> Path:
    model = model.eval()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(tmp), dynamo=False, opset_version=OPSET, input_names=["lq"],
                              output_names=["sr"], dynamic_axes={"lq": {0: "n", 2: "h", 3: "w"},
                                                                 "sr": {0: "n", 2: "sh", 3: "sw"}})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


class OnnxModule(nn.Module):
    """An ONNX SR model run by onnxruntime (CPU), called like the PyTorch network: (N, 3, h, w) in [0, 1]."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        super().__init__()
        ort = _ort()
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"{path}: no such ONNX file")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # no busy-waiting pool threads between runs: they would steal the cores from whatever runs next
        # (PyTorch in a side-by-side benchmark, the rest of a pipeline)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"{path}: not a loadable ONNX model ({first[:200]})") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].shape[1] not in (3, "c"):
            raise CheckpointError(f"{path}: expected one (N, 3, H, W) input and one output, got inputs "
                                  f"{[(i.name, i.shape) for i in inputs]} and outputs {[o.name for o in outputs]}")
        self.input_name = inputs[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.session.run(None, {self.input_name: x.detach().to("cpu", torch.float32).contiguous().numpy()})[0]
        return torch.from_numpy(y).to(x.device)

    def infer_scale(self, size: int = 32) -> int:
        """The upscaling factor, from the output of a size x size input (a clear error if it is not an SR model)."""
        y = self(torch.rand(1, 3, size, size))
        s = y.shape[-1] // size
        if y.dim() != 4 or y.shape[1] != 3 or s < 1 or y.shape[-2:] != (size * s, size * s):
            raise CheckpointError(f"{self.path}: output shape {tuple(y.shape)} for a 1x3x{size}x{size} input is "
                                  "not an x s RGB super-resolution")
        return s


@torch.no_grad()
def compare_onnx(model: nn.Module, onnx: OnnxModule, dataset: BenchmarkSet, *, tol: float = 1e-3) -> dict:
    """Run both on every LR image of `dataset`: max abs difference of the float outputs and PSNR-Y of each.

    A shape mismatch or a difference above `tol` (float outputs in [0, 1]) means the ONNX file is not this
    model: CheckpointError."""
    model = model.eval()
    rows, max_diff = [], 0.0
    for sample in dataset:
        lq = to_tensor(sample.lq, channels=3)[None]
        a, b = model(lq), onnx(lq)
        if a.shape != b.shape:
            raise CheckpointError(f"{onnx.path} does not match the model: output {tuple(b.shape)} vs "
                                  f"{tuple(a.shape)} on {dataset.name}/{sample.name}")
        d = float((a - b).abs().max())
        max_diff = max(max_diff, d)
        gray = sample.gt.ndim == 2
        pa = score(sr_to_uint8(a, gray), sample.gt, dataset.scale, sample.name)["psnr_y"]
        pb = score(sr_to_uint8(b, gray), sample.gt, dataset.scale, sample.name)["psnr_y"]
        rows.append({"name": sample.name, "max_abs_diff": d, "psnr_y_torch": pa, "psnr_y_onnx": pb})
    if max_diff > tol:
        raise CheckpointError(f"{onnx.path} does not match the model: max abs difference {max_diff:.3g} on "
                              f"{dataset.name} (tolerance {tol:g})")
    pt = float(np.mean([r["psnr_y_torch"] for r in rows]))
    ox = float(np.mean([r["psnr_y_onnx"] for r in rows]))
    return {"dataset": dataset.name, "max_abs_diff": max_diff, "psnr_y_torch": pt, "psnr_y_onnx": ox,
            "psnr_y_diff": ox - pt, "images": rows}


# --- INT8 ------------------------------------------------------------------------------------------------


def quantize_int8(onnx_path: str | os.PathLike, out_path: str | os.PathLike,
                  calibration: Iterable[torch.Tensor]) -> Path:
    """Static INT8 quantization (QDQ, per-channel weights, MinMax) calibrated on LR patches (N, 3, h, w)."""
    _ort()
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self, batches):
            self.it = iter([{"lq": b.to(torch.float32).numpy()} for b in batches])

        def get_next(self):
            return next(self.it, None)

    out_path = Path(out_path)
    pre = out_path.with_name(f".{out_path.name}.pre.onnx")
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    try:
        try:
            quant_pre_process(str(onnx_path), str(pre), skip_symbolic_shape=True)
            src = pre
        except Exception:
            src = Path(onnx_path)  # pre-processing is an optimisation; quantize the plain model without it
        quantize_static(str(src), str(tmp), Reader(calibration), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        os.replace(tmp, out_path)
    finally:
        for p in (pre, tmp):
            if p.exists():
                p.unlink()
    return out_path


def ort_latency(module: OnnxModule, x: torch.Tensor, warmup: int = 2, repeats: int = 5) -> float:
    """Median seconds per onnxruntime run (the session's own thread count)."""
    feed = {module.input_name: x.numpy()}
    for _ in range(warmup):
        module.session.run(None, feed)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        module.session.run(None, feed)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def save_json_atomic(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


__all__ = ["OnnxModule", "compare_onnx", "export_onnx", "export_torchscript", "ort_latency",
           "quantize_int8", "save_deploy", "save_json_atomic"]
