"""Size and speed of a network: parameters, forward FLOPs, measured time, machine throughput.

Used by ``transmrsr model-summary`` and ``benchmarks/bench_models.py`` so that both report
the same numbers the same way.

FLOPs come from :class:`torch.utils.flop_counter.FlopCounterMode`, which counts one
multiply-add as 2 FLOPs and only sees matrix products: ``mm``/``addmm``/``bmm``/``baddbmm``,
convolutions (grouped and depth-wise ones correctly) and the fused attention kernels. It
misses every element-wise and reduction op (normalisations, activations, softmax, residual
additions, L2 normalisation), interpolation and the gathers of window partitioning; pixel
(un)shuffle, padding and reshapes have no arithmetic anyway. For convolution- and
matmul-heavy networks the missing part is a few per cent of the arithmetic, but it can be a
large part of the *time* on a CPU, where those ops are memory-bound: the "achieved GFLOP/s" of
a network with many of them (Restormer) is therefore low compared with the plain matmul.

Two corrections to PyTorch 2.13's formulas, so that counts do not depend on the device or on
grouped convolutions: there is no formula for the CPU flash-attention kernel that
:func:`torch.nn.functional.scaled_dot_product_attention` dispatches to on a CPU (Swin attention
would count zero FLOPs there), so :func:`count_flops` adds the CUDA kernels' formula; and the
convolution-backward formula ignores groups (see :func:`_conv_backward_flops`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

#: Side of the square matrices of :func:`matmul_gflops`: large enough to reach the BLAS peak,
#: small enough (16 MiB per matrix) to take well under a second on two cores.
MATMUL_SIZE = 2048


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameters per top-level child of ``model`` (in definition order) and their ``total``.

    Parameters registered directly on ``model`` (not inside a child) are reported as ``"(own)"``
    so that the parts always sum to the total. Shared parameters are counted once, in the first
    child that holds them. Works on meta-device models (only shapes are read).
    """
    seen: set[int] = set()
    counts: dict[str, int] = {}

    def tally(params: Callable[[], Any]) -> int:
        n = 0
        for p in params():
            if id(p) not in seen:
                seen.add(id(p))
                n += p.numel()
        return n

    for name, child in model.named_children():
        counts[name] = tally(child.parameters)
    own = tally(lambda: model.parameters(recurse=False))
    if own:
        counts["(own)"] = own
    counts["total"] = sum(counts.values())
    return counts


def _cpu_flash_attention_flops(
    query_shape: Sequence[int],
    key_shape: Sequence[int],
    value_shape: Sequence[int],
    *args: Any,
    out_shape: Any = None,
    **kwargs: Any,
) -> int:
    """FLOPs of ``softmax(q k^T) v``: two batched matmuls (``[..., Lq, E] x [..., E, Lk]`` and
    ``[..., Lq, Lk] x [..., Lk, Ev]``), 2 FLOPs per multiply-add."""
    *batch, lq, e = query_shape
    lk = key_shape[-2]
    ev = value_shape[-1]
    return 2 * math.prod(batch) * lq * lk * (e + ev)


def _conv_backward_flops(
    grad_out_shape: Sequence[int],
    x_shape: Sequence[int],
    w_shape: Sequence[int],
    _bias: Any,
    _stride: Any,
    _padding: Any,
    _dilation: Any,
    transposed: bool,
    _output_padding: Any,
    _groups: int,
    output_mask: Sequence[bool],
    out_shape: Any = None,
    **kwargs: Any,
) -> int:
    """FLOPs of a convolution's backward: the input gradient and the weight gradient each cost
    exactly the forward convolution (bias gradients are a sum, not counted).

    PyTorch's own formula rebuilds the two gradients as convolutions with the channel axes of
    the weight swapped and loses the groups on the way: a depth-wise 3x3 conv of C channels is
    counted C times too expensive (Restormer's backward came out at 14 times its forward).
    ``w_shape`` is ``[C_out, C_in / groups, k...]``, so the forward formula is exact for groups.
    """
    forward = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def _extra_flop_formulas() -> dict[Any, Any]:
    """Formulas added to, or replacing, FlopCounterMode's (see the module docstring)."""
    formulas: dict[Any, Any] = {torch.ops.aten.convolution_backward: _conv_backward_flops}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None:
        formulas[op] = _cpu_flash_attention_flops
    return formulas


def _example_input(model: nn.Module, input_shape: Sequence[int]) -> torch.Tensor:
    """A zero input on the model's device and in its floating dtype."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    return torch.zeros(tuple(input_shape), device=device, dtype=dtype)


def count_flops(model: nn.Module, input_shape: Sequence[int], *, backward: bool = False) -> int:
    """Forward FLOPs of ``model`` on one input of ``input_shape`` (e.g. ``(1, 1, 256, 256)``).

    Runs one forward pass (in eval mode, without autograd, on the model's device) under
    :class:`~torch.utils.flop_counter.FlopCounterMode`; see the module docstring for what it
    counts and misses. It uses :func:`torch.no_grad`, not inference mode, so that no
    inference tensor ends up in a network's caches (the Swin index cache) and breaks a later
    training pass in the same process. FLOPs scale linearly with the batch, so a batch of one
    is enough. With ``backward=True`` it counts a training step instead: forward plus the
    backward of the output sum (about three times the forward), in training mode.
    """
    x = _example_input(model, input_shape)
    counter = FlopCounterMode(display=False, custom_mapping=_extra_flop_formulas())
    was_training = model.training
    model.train(backward)
    try:
        if backward:
            with counter:
                model(x).sum().backward()
            model.zero_grad(set_to_none=True)
        else:
            with torch.no_grad(), counter:
                model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forward(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    threads: int | None = None,
    repeats: int = 3,
    warmup: int = 1,
    backward: bool = False,
) -> float:
    """Milliseconds per slice (per batch element) of a forward pass, median of ``repeats``.

    ``threads`` sets :func:`torch.set_num_threads` for the measurement (restored afterwards),
    so that numbers from different machines compare at the same core count. ``warmup`` passes
    are run first and discarded (allocator, oneDNN primitive caches, CUDA kernels). The median
    resists the occasional stall of a shared machine. With ``backward=True`` each repeat is a
    forward plus a backward of the output sum, in training mode (what a training step costs,
    without the optimiser); otherwise the forward runs in eval mode under
    :func:`torch.inference_mode`.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats=} {warmup=}")
    x = _example_input(model, input_shape)
    batch = x.shape[0]
    old_threads = torch.get_num_threads()
    was_training = model.training
    if threads is not None:
        torch.set_num_threads(threads)

    def step() -> None:
        if backward:
            model.zero_grad(set_to_none=True)
            model(x).sum().backward()
        else:
            with torch.inference_mode():
                model(x)

    try:
        model.train(backward)
        for _ in range(warmup):
            step()
        _synchronize(x.device)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            step()
            _synchronize(x.device)
            times.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
        if backward:
            model.zero_grad(set_to_none=True)
        torch.set_num_threads(old_threads)
    times.sort()
    return 1000.0 * times[len(times) // 2] / batch


def matmul_gflops(
    threads: int | None = None,
    *,
    size: int = MATMUL_SIZE,
    repeats: int = 5,
    device: torch.device | str = "cpu",
) -> float:
    """Achieved GFLOP/s of a plain float32 ``size x size`` matmul: the machine's reference.

    A network's achieved GFLOP/s divided by this number says how well it uses the hardware,
    independently of how fast the machine is; it is measured in the same run (same load, same
    thread count) as the network timings it is compared with. Best of ``repeats``.
    """
    device = torch.device(device)
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        gen = torch.Generator(device=device).manual_seed(0)
        a = torch.randn(size, size, device=device, generator=gen)
        b = torch.randn(size, size, device=device, generator=gen)
        torch.mm(a, b)
        _synchronize(device)
        best = math.inf
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            _synchronize(device)
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(old_threads)
    return 2.0 * size**3 / best / 1e9


def fill_missing_centroids(model: nn.Module, seed: int = 0) -> int:
    """Give random centroids to every SDT module of ``model`` that has none; return how many.

    A freshly built TransMRSR refuses to run its self-distilled truncation until centroids
    from a prior are loaded (a safety check). Profiling an untrained model needs a forward
    pass anyway, and the truncation costs the same whatever the centroids are, so this fills
    them with random values. Never use it on a model that will produce real outputs.
    """
    filled = 0
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        has = getattr(module, "has_centroids", None)
        setter = getattr(module, "set_centroids", None)
        if isinstance(has, torch.Tensor) and callable(setter) and not bool(has):
            shape = module.get_buffer("centroids").shape
            setter(torch.randn(shape, generator=gen))
            filled += 1
    return filled


def count_flops_of(
    build: Callable[[], nn.Module], input_shape: Sequence[int], *, backward: bool = False
) -> int:
    """:func:`count_flops` of the network that ``build()`` returns, as cheaply as possible.

    The network is first built on the meta device, where the counting pass only propagates
    shapes: instant and weightless even for the paper configurations (EDSR's 5 TFLOPs per
    slice would take over a minute on two cores). A network whose forward reads tensor values
    (TransMRSR's SDT checks a flag) cannot run there; it is then built on the CPU and run once.
    """
    try:
        with torch.device("meta"):
            model = build()
        fill_missing_centroids(model)
        return count_flops(model, input_shape, backward=backward)
    except (RuntimeError, NotImplementedError):
        model = build()
        fill_missing_centroids(model)
        return count_flops(model, input_shape, backward=backward)
