"""Model complexity in correct units and in the units the SNA paper's tables print.

Paper: Combating spatial redundancy with spectral norm attention in convolutional learners
(Neurocomputing, 2022), Tables 1 and 2 ("#.Param." in M, "FLOPs" in G, "Inference" in FPS).

Correct units:

- :func:`count_params`: number of parameters.
- :func:`count_flops`: floating-point operations of one forward pass in eval mode, counted by
  ``torch.utils.flop_counter.FlopCounterMode``: 2 FLOPs per multiply-add of every convolution,
  linear layer and matrix product (``mm``/``bmm``/``matmul``/``einsum``), so SNA's own power
  iteration and the self-attention products *are* counted; element-wise ops (BatchNorm, ReLU,
  softmax, norms) are not. torchvision ResNet-50 at 1×3×224×224: 8,178,368,512 FLOPs
  (= 4.09 G multiply-adds, torchvision's "GFLOPS" figure).
- :func:`measure_throughput`: inference images per second.

The paper's units (the authors' code, see notes/paper-vs-code.md):

- :func:`paper_param_count`: ``count_bytes`` of the count: divide by 1024 while the integer part
  is ≥ 1024, write ``integer.remainder`` with the 0-1023 remainder zero-padded to three digits
  (not a fraction: 11,220,132 → 10 rem 717 → "10.717"), then keep four significant digits by
  truncation. This reproduces all three anchors: 11,220,132 → "10.71" (CIFAR ResNet-18),
  25,557,032 → "24.38" (ResNet-50), 7,048,676 → "6.739" (CIFAR DenseNet-121; Table 1 itself
  prints 6.74 for it, the notes' figure is the truncated string).
- :func:`paper_flops`: torchstat's "Total Flops" at input 3×244×244 (the code's typo for 224),
  batch 1, in G = ÷1000³ rounded to two decimals. torchstat counts, per *leaf* module and only
  for the last call of a module object called several times (ResNet reuses one ``relu``):
  Conv: k_h·k_w·C_in·(C_out/groups)·H_out·W_out (+ C_out·H_out·W_out with bias), i.e. one per
  multiply-add; Linear: batch·in·out; BatchNorm: 2 per input element (1 without affine);
  ReLU family, max/avg-pool: 1 per input element; Upsample: 1 per output element; everything
  else (adaptive pooling, softmax, matmul, sigmoid, Conv1d) 0. The reimplementation here gives
  exactly the anchors: CIFAR ResNet-18 32.64 (32,640,058,368), ResNet-50 5.19 (5,187,418,880),
  CIFAR DenseNet-121 52.45 (52,453,419,648).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

PAPER_FLOPS_INPUT = (3, 244, 244)  # the authors' torchstat call (a typo for 224)
_COUNT_BYTES_BASE = 1024
_PAPER_SIGNIFICANT_DIGITS = 4


def count_params(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (shared parameters once)."""
    return sum(
        p.numel() for p in model.parameters() if p.requires_grad or not trainable_only
    )


def _batched_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 3:
        return (1, *shape)
    if len(shape) == 4:
        return shape
    raise ValueError(
        f"input_shape must be (C, H, W) or (B, C, H, W), got {tuple(input_shape)!r}"
    )


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


class _EvalMode:
    """Put a model in eval mode for a measurement and restore every module's own flag after."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.flags: list[tuple[nn.Module, bool]] = []

    def __enter__(self) -> nn.Module:
        self.flags = [(module, module.training) for module in self.model.modules()]
        return self.model.eval()

    def __exit__(self, *exc: object) -> None:
        for module, training in self.flags:
            module.training = training


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """FLOPs (2 per multiply-add) of one eval-mode forward pass at ``input_shape``.

    ``input_shape`` is (C, H, W) for one image or (B, C, H, W). Returns an int number of FLOPs
    (not multiply-adds, not GFLOPs).
    """
    shape = _batched_shape(input_shape)
    with _EvalMode(model), torch.no_grad():
        inputs = torch.randn(shape, device=_model_device(model))
        with FlopCounterMode(display=False) as counter:
            model(inputs)
    return int(counter.get_total_flops())


def measure_throughput(
    model: nn.Module,
    input_shape: Sequence[int],
    batch_size: int,
    warmup: int = 3,
    iters: int = 10,
    device: str | torch.device = "cpu",
) -> float:
    """Inference throughput in images per second: median over ``iters`` timed batches.

    ``input_shape`` is (C, H, W). The model is moved to ``device`` (in place) and run in eval mode
    under ``torch.inference_mode``; on CUDA every batch is synchronised before the clock stops.
    """
    if batch_size < 1 or warmup < 0 or iters < 1:
        raise ValueError(
            f"need batch_size >= 1, warmup >= 0, iters >= 1; got {batch_size}, {warmup}, {iters}"
        )
    if len(input_shape) != 3:
        raise ValueError(
            f"input_shape must be (C, H, W) (batch_size gives B), got {tuple(input_shape)!r}"
        )
    device = torch.device(device)
    model.to(device)
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    batch = torch.randn((batch_size, *input_shape), device=device)
    seconds: list[float] = []
    with _EvalMode(model), torch.inference_mode():
        for _ in range(warmup):
            model(batch)
        synchronize()
        for _ in range(iters):
            start = time.perf_counter()
            model(batch)
            synchronize()
            seconds.append(time.perf_counter() - start)
    return batch_size / statistics.median(seconds)


def paper_param_count(count: int) -> str:
    """The paper's "#.Param." string for ``count`` parameters (see the module docstring)."""
    if count < 0:
        raise ValueError(f"parameter count must be >= 0, got {count}")
    integer, remainder = int(count), 0
    while integer >= _COUNT_BYTES_BASE:
        integer, remainder = divmod(integer, _COUNT_BYTES_BASE)
    integer_digits = str(integer)
    decimals = max(_PAPER_SIGNIFICANT_DIGITS - len(integer_digits), 0)
    return integer_digits + (f".{remainder:03d}"[: decimals + 1] if decimals else "")


def _torchstat_leaf_flops(
    module: nn.Module, inputs: tuple[Any, ...], output: Any
) -> int:
    if not inputs or not isinstance(inputs[0], torch.Tensor):
        return 0
    x = inputs[0]
    if isinstance(module, (nn.Conv2d, nn.Conv3d)):
        kernel = math.prod(module.kernel_size)
        active = output.shape[0] * math.prod(output.shape[2:])
        out_channels = output.shape[1]
        flops = kernel * x.shape[1] * (out_channels // module.groups) * active
        return flops + (out_channels * active if module.bias is not None else 0)
    if isinstance(module, (nn.BatchNorm2d, nn.BatchNorm3d)):
        return x.numel() * (2 if module.affine else 1)
    if isinstance(module, (nn.ReLU, nn.ReLU6, nn.PReLU, nn.ELU, nn.LeakyReLU)):
        return x.numel()
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d, nn.MaxPool3d, nn.AvgPool3d)):
        return x.numel()
    if isinstance(module, nn.Upsample):
        return output.numel()
    if isinstance(module, nn.Linear):
        # torchstat asserts a 2-D input; rows of a higher-rank input are counted the same way.
        return (
            (x.numel() // module.in_features) * module.in_features * module.out_features
        )
    return 0


def torchstat_flops(
    model: nn.Module, input_shape: Sequence[int] = PAPER_FLOPS_INPUT
) -> int:
    """torchstat's "Total Flops" (an int; see the module docstring for its counting rules)."""
    shape = _batched_shape(input_shape)
    last_call: dict[nn.Module, int] = {}  # torchstat keeps only a module's last call

    def record(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        last_call[module] = _torchstat_leaf_flops(module, inputs, output)

    leaves = [
        module for module in model.modules() if next(module.children(), None) is None
    ]
    handles = [leaf.register_forward_hook(record) for leaf in leaves]
    try:
        with _EvalMode(model), torch.inference_mode():
            model(torch.rand(shape, device=_model_device(model)))
    finally:
        for handle in handles:
            handle.remove()
    return sum(last_call.values())


def paper_flops(model: nn.Module, in_channels: int = PAPER_FLOPS_INPUT[0]) -> float:
    """The paper's "FLOPs" figure in G: torchstat's Total Flops at 244×244, ÷1000³, 2 decimals."""
    return round(
        torchstat_flops(model, (in_channels, *PAPER_FLOPS_INPUT[1:])) / 1000**3, 2
    )


def complexity_report(model: nn.Module, input_shape: Sequence[int]) -> dict[str, Any]:
    """Parameters and FLOPs in correct units (at ``input_shape``) and in the paper's units.

    Keys: ``params`` (count), ``flops`` (FLOPs at ``input_shape``, 2 per multiply-add, matmuls
    included), ``gflops`` (flops / 1e9), ``macs`` (flops / 2), ``input_shape``,
    ``paper_params`` (the paper's "#.Param." string), ``paper_flops_g`` (the paper's "FLOPs",
    torchstat at C×244×244) and ``paper_flops_input``.
    """
    shape = _batched_shape(input_shape)
    params = count_params(model)
    flops = count_flops(model, shape)
    paper_input = (shape[1], *PAPER_FLOPS_INPUT[1:])
    return {
        "params": params,
        "flops": flops,
        "gflops": flops / 1e9,
        "macs": flops // 2,
        "input_shape": list(shape),
        "paper_params": paper_param_count(params),
        "paper_flops_g": paper_flops(model, shape[1]),
        "paper_flops_input": list(paper_input),
    }
