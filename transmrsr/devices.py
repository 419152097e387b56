"""Where the networks run (CPU or GPU) and in which precision (fp32 or bf16 autocast).

bf16 autocast halves the bytes of every activation and runs matrix products on bf16 units:
GPUs have them, and so do CPUs with Intel AMX (Sapphire Rapids and later) or with the
AVX512-BF16 dot-product instructions (Cooper Lake, AMD Zen 4 and later). Where both are
missing (an AVX2-only CPU), bf16 on a CPU is emulated and far slower than fp32. Training and
inference differ in what ``auto`` means: training keeps a CPU in exact fp32 unless asked
(``--precision bf16``: about 1.4x faster compact training steps measured on an AMX CPU), while
restoring uses bf16 on GPUs and AMX CPUs, because the restored volume is the same to the
measured precision (the x4 template restore of ``benchmarks/bench_restore.py``: masked PSNR
31.757 dB in bf16, 31.752 dB in fp32) and it was faster there. On AVX512-BF16 alone it was
1.5x faster with batches of planes (2026-11-26), but today's restore feeds one plane per pass
and there fp32 wins (72-75 s against 85-87 s, 2-core AMD EPYC, 2026-12-07), so ``auto``
keeps those CPUs in fp32.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

from transmrsr.errors import TransMRSRError

T = TypeVar("T")
R = TypeVar("R")

#: What ``--precision`` takes.
PRECISIONS = ("auto", "fp32", "bf16")


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` (GPU when present), ``cpu`` or ``cuda``; a clear error for an absent GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise TransMRSRError("--device cuda was asked for, but no CUDA GPU is available")
        return torch.device("cuda", local_rank)
    if name == "cpu":
        return torch.device("cpu")
    raise TransMRSRError(f"unknown device {name!r}; choose auto, cpu or cuda")


def check_precision(precision: str) -> str:
    """``precision`` itself when it is one of :data:`PRECISIONS`; a clear error otherwise."""
    if precision not in PRECISIONS:
        raise TransMRSRError(f"unknown precision {precision!r}; choose {', '.join(PRECISIONS)}")
    return precision


#: PyTorch's CPU probes for bf16 matrix hardware: Intel AMX tiles, AVX512-BF16 dot products.
BF16_CPU_PROBES = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")


def cpu_has_bf16_units() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AMX tiles or AVX512-BF16).

    Read from PyTorch's CPU capability probes; a build without them counts as no, so an
    unknown CPU stays on the exact fp32 path.
    """
    return any(_cpu_probe(name) for name in BF16_CPU_PROBES)


def cpu_has_amx_tiles() -> bool:
    """Whether this CPU has Intel AMX tiles (PyTorch's probe; a build without it: no)."""
    return _cpu_probe(BF16_CPU_PROBES[0])


def _cpu_probe(name: str) -> bool:
    """PyTorch's CPU probe ``name``; absent or failing counts as no."""
    probe = getattr(torch.cpu, name, None)
    try:
        return bool(probe is not None and probe())
    except RuntimeError:
        return False


def uses_bf16(precision: str, device: torch.device) -> bool:
    """Training: whether ``precision`` means bf16 autocast on ``device``.

    ``auto`` on GPUs only (a CPU trains in exact fp32 unless asked), ``bf16`` everywhere,
    ``fp32`` never.
    """
    if check_precision(precision) == "auto":
        return device.type == "cuda"
    return precision == "bf16"


def inference_uses_bf16(precision: str, device: torch.device) -> bool:
    """Restoring (and adapting to a scan): whether ``precision`` means bf16 autocast.

    ``auto`` where bf16 is measured faster: GPUs, and CPUs with AMX tiles
    (:func:`cpu_has_amx_tiles`). AVX512-BF16 alone multiplies bf16 too, but on those CPUs
    (2-core AMD EPYC, 2026-12-07) the default restore took 85-87 s in bf16 against 72-75 s in
    fp32: one plane per pass leaves too little work per product to repay the casts.
    ``bf16`` everywhere; ``fp32`` never.
    """
    if check_precision(precision) == "auto":
        return device.type == "cuda" or (device.type == "cpu" and cpu_has_amx_tiles())
    return precision == "bf16"


def default_workers(device: torch.device | str) -> int:
    """Python threads that share a CPU's work (:func:`map_in_threads`): two where PyTorch has
    at least two intra-op threads, one on a GPU (one stream of batches keeps it busy).

    Many of the compact network's operations are too small to keep two cores busy from one
    thread: two intra-op threads ran 1.48 times as fast as one on a 2-core CPU, while two
    threads of one intra-op thread each kept both cores busy (forward passes and the
    adaptation's training steps, docs/experiments.md, 2026-11-29).
    """
    if torch.device(device).type != "cpu":
        return 1
    return min(2, torch.get_num_threads())


def resolve_workers(workers: int | None, device: torch.device | str) -> int:
    """``workers`` itself, or :func:`default_workers` for ``None``; a clear error below 1."""
    workers = default_workers(device) if workers is None else workers
    if workers < 1:
        raise TransMRSRError(f"workers must be at least 1, got {workers}")
    return workers


def default_batch_size(device: torch.device | str) -> int:
    """Planes per forward pass when not asked: one on a CPU, eight on a GPU.

    On a CPU, batches of eight allocate arrays above glibc's mmap threshold, and their pages
    are faulted in afresh on every pass (millions of minor faults per volume); batches of one
    stay in the heap. Measured on a 2-core CPU: the default restore of the IXI-sized case took
    114 s with one plane per pass in each of two threads, 144 s with eight (docs/experiments.md,
    2026-11-29).
    """
    return 8 if torch.device(device).type != "cpu" else 1


def map_in_threads(run: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``run`` over ``items``, results in order, in ``workers`` threads that split PyTorch's
    intra-op threads among them (restored afterwards); ``workers == 1``: in this thread.

    PyTorch releases the GIL inside its operators. Grad and autocast modes are per thread,
    so ``run`` must set the ones it needs.
    """
    if workers < 1:
        raise TransMRSRError(f"workers must be at least 1, got {workers}")
    if workers == 1:
        yield from map(run, items)
        return
    threads = torch.get_num_threads()
    with ThreadPoolExecutor(
        workers, initializer=torch.set_num_threads, initargs=(max(1, threads // workers),)
    ) as pool:
        try:
            yield from pool.map(run, items)
        finally:
            torch.set_num_threads(threads)
