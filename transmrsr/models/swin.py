"""2-D Swin Transformer building blocks (Liu et al. 2021; SwinIR, Liang et al. 2021).

Every module here works on channels-last token maps ``[B, H, W, C]`` of any height and width.
A map that is not a multiple of the window is padded on the bottom/right, the padding slots are
masked out as keys (real tokens never attend to padding) and dropped from the output. The
shifted-window mask, the padding and the relative-position index are computed for the actual
map size and cached, instead of being fixed at construction for one input resolution, so the
same weights serve 256 x 256 training crops and any slice size at inference.

Pieces:

* :func:`window_partition` / :func:`window_reverse` and :func:`resolve_window` (the Swin rule:
  a map no larger than the window is one window, and is not shifted);
* :func:`relative_position_index`, :class:`RelativePositionBias`, :func:`attention_mask`;
* :func:`window_plan` and :func:`window_self_attention`, the attention core shared with the
  StyleSwin blocks (one gather in, one gather out, see :class:`WindowPlan`);
* :class:`WindowMSA`, :class:`WindowAttention`, :class:`Mlp`, :class:`SwinBlock`,
  :class:`RSTB`, :class:`PatchMerging`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

T = TypeVar("T")


def init_transformer_weights(module: nn.Module) -> None:
    """Swin/StyleSwin initialisation: truncated-normal(0.02) linear weights, zero biases,
    unit LayerNorms. Apply with ``module.apply``; other layer types are left alone."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def window_partition(x: Tensor, window: int) -> Tensor:
    """Cut ``[B, H, W, C]`` into windows ``[B * nW, window * window, C]`` (row-major windows).

    H and W must be multiples of ``window``.
    """
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_reverse(windows: Tensor, window: int, height: int, width: int) -> Tensor:
    """Inverse of :func:`window_partition`: ``[B * nW, window * window, C]`` -> ``[B, H, W, C]``."""
    c = windows.shape[-1]
    n_windows = (height // window) * (width // window)
    b = windows.shape[0] // n_windows
    x = windows.view(b, height // window, width // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, height, width, c)


def resolve_window(height: int, width: int, window: int, shifted: bool) -> tuple[int, int]:
    """Window size and shift actually used on an ``height x width`` map.

    Swin's rule: when the shorter side is no longer than the window, a single window of that
    side covers it and nothing is shifted (a shift would only wrap the map onto itself).
    Otherwise the configured window is used, shifted by half a window for SW-MSA.
    """
    short = min(height, width)
    if short <= window:
        return short, 0
    return window, (window // 2 if shifted else 0)


def _normal_tensors(build: Callable[..., T]) -> Callable[..., T]:
    """Build cached tensors outside inference mode.

    A cache filled during an ``inference_mode`` forward (validation, say) would otherwise hold
    inference tensors, and every later training step that reads them would fail to save them
    for backward.
    """

    @functools.wraps(build)
    def wrapper(*args: object) -> T:
        with torch.inference_mode(False):
            return build(*args)

    return wrapper


@functools.lru_cache(maxsize=64)
@_normal_tensors
def _relative_position_index(window: int, table_window: int, device: torch.device) -> Tensor:
    coords = torch.stack(
        torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    ).flatten(1)  # [2, N]
    rel = coords[:, :, None] - coords[:, None, :] + (table_window - 1)  # [2, N, N], >= 0
    return (rel[0] * (2 * table_window - 1) + rel[1]).to(device)


def relative_position_index(
    window: int, table_window: int | None = None, device: torch.device | str | None = None
) -> Tensor:
    """Index ``[N, N]`` (N = window^2) into a relative-position table built for ``table_window``.

    Entry (i, j) encodes the offset between tokens i and j of a window, (dy, dx) in
    [-(w-1), w-1]^2, as ``(dy + W - 1) * (2W - 1) + (dx + W - 1)`` with W = ``table_window``.
    A window smaller than the table's (a small map) uses the central part of the same table.
    Cached per device.
    """
    table_window = window if table_window is None else table_window
    if not 1 <= window <= table_window:
        raise ValueError(f"window {window} must be in [1, {table_window}]")
    device = torch.device("cpu") if device is None else torch.device(device)
    return _relative_position_index(window, table_window, device)


class RelativePositionBias(nn.Module):
    """Learned bias per relative offset and head, table ``[(2W - 1)^2, heads]``."""

    def __init__(self, window: int, num_heads: int) -> None:
        super().__init__()
        self.window = window
        self.num_heads = num_heads
        self.table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.table, std=0.02)

    def forward(self, window: int) -> Tensor:
        """Bias ``[heads, N, N]`` for an (effective) window of side ``window``."""
        index = relative_position_index(window, self.window, self.table.device)
        n = window * window
        return self.table[index.reshape(-1)].view(n, n, self.num_heads).permute(2, 0, 1)

    def extra_repr(self) -> str:
        return f"window={self.window}, num_heads={self.num_heads}"


@dataclass(frozen=True)
class WindowPlan:
    """How one map size is cut into (padded, shifted) windows.

    Padding, cyclic shift and window partition are folded into one gather of token rows, and
    their inverse into one gather back, instead of pad + roll + permute copies (attention is
    memory-bound on a CPU at 256 x 256). Windows that need no mask come first, so that most of
    the attention runs with a broadcast bias and only the windows at the shifted border or
    touching padding need a materialised per-window mask.

    Attributes:
        window: effective window side; ``shift``: cyclic shift (0 for W-MSA).
        n_plain: windows per image that need no mask (they come first).
        rows: ``[nW * N]`` token row (of the flattened ``H * W`` map) of every window slot;
            padding slots point at an arbitrary real row: they are masked as keys and dropped
            as queries.
        slots: ``[H * W]`` window slot of every map token.
        mask: additive mask ``[masked windows per image, N, N]`` (0 or -inf), or None.
    """

    window: int
    shift: int
    n_plain: int
    rows: Tensor
    slots: Tensor
    mask: Tensor | None

    def batch_indices(self, batch: int) -> tuple[Tensor, Tensor]:
        """Gather and scatter indices for ``batch`` images flattened to ``[B * H * W]`` rows.

        The batch order is: the plain windows of every image, then the masked windows of every
        image, so that each group is one contiguous slice.
        """
        n = self.window * self.window
        hw = self.slots.numel()
        n_windows = self.rows.numel() // n
        split = self.n_plain * n
        image = torch.arange(batch, device=self.rows.device)[:, None]
        gather = torch.cat(
            [
                (image * hw + self.rows[None, :split]).reshape(-1),
                (image * hw + self.rows[None, split:]).reshape(-1),
            ]
        )
        plain_slot = image * split + self.slots
        masked_slot = batch * split + image * (n_windows * n - split) + self.slots - split
        scatter = torch.where(self.slots < split, plain_slot, masked_slot).reshape(-1)
        return gather, scatter


def _window_layout(
    height: int, width: int, window: int, shift: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-image token rows, validity and Swin region label of every window slot ``[nW, N]``."""
    padded_h = height + (-height) % window
    padded_w = width + (-width) % window
    rows = torch.zeros(padded_h, padded_w, dtype=torch.long)
    rows[:height, :width] = torch.arange(height * width).view(height, width)
    valid = torch.zeros(padded_h, padded_w, dtype=torch.bool)
    valid[:height, :width] = True
    rows = torch.roll(rows, shifts=(-shift, -shift), dims=(0, 1))
    valid = torch.roll(valid, shifts=(-shift, -shift), dims=(0, 1))
    # Region labels live in the shifted frame: the last `shift` rows/columns hold content that
    # the cyclic shift wrapped around from the opposite border and must not mix with the rest.
    region = torch.zeros(padded_h, padded_w, dtype=torch.long)
    if shift:
        bands = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
        for i, band_rows in enumerate(bands):
            for j, band_cols in enumerate(bands):
                region[band_rows, band_cols] = 3 * i + j

    def part(t: Tensor) -> Tensor:
        return window_partition(t[None, :, :, None], window)[..., 0]

    return part(rows), part(valid), part(region)


def attention_mask(height: int, width: int, window: int, shift: int) -> Tensor:
    """Boolean ``[nW, N, N]`` (True = query i may attend to key j) for one map size.

    The map is padded to multiples of ``window`` and cyclically shifted by ``shift``; windows
    are in row-major order of the shifted frame. A query may attend to a key iff both lie in
    the same region of the shifted frame (Swin's SW-MSA mask) and the key is a real token, not
    padding. A padding query keeps itself as a key so that its softmax row is never empty (its
    output is discarded).
    """
    _, valid, region = _window_layout(height, width, window, shift)
    same_region = region[:, :, None] == region[:, None, :]
    self_key = torch.eye(window * window, dtype=torch.bool)[None]
    return same_region & (valid[:, None, :] | self_key)


@functools.lru_cache(maxsize=64)
@_normal_tensors
def window_plan(
    height: int,
    width: int,
    window: int,
    shift: int,
    device: torch.device,
    dtype: torch.dtype,
) -> WindowPlan:
    """Cached :class:`WindowPlan` for ``height x width`` maps."""
    rows, valid, _ = _window_layout(height, width, window, shift)
    allowed = attention_mask(height, width, window, shift)
    needs_mask = ~allowed.flatten(1).all(dim=1)
    order = torch.cat([torch.nonzero(~needs_mask)[:, 0], torch.nonzero(needs_mask)[:, 0]])
    n_plain = int((~needs_mask).sum())
    rows, valid, allowed = rows[order].reshape(-1), valid[order].reshape(-1), allowed[order]
    slots = torch.empty(height * width, dtype=torch.long)
    slots[rows[valid]] = torch.nonzero(valid)[:, 0]
    mask = None
    if n_plain < len(order):
        masked = ~allowed[n_plain:]
        mask = torch.zeros(masked.shape).masked_fill_(masked, float("-inf"))
        mask = mask.to(device=device, dtype=dtype)
    return WindowPlan(
        window=window,
        shift=shift,
        n_plain=n_plain,
        rows=rows.to(device),
        slots=slots.to(device),
        mask=mask,
    )


def scaled_dot_product_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
    """Softmax attention with an additive bias, ``[..., N, d]`` inputs.

    PyTorch's fused kernel runs inference, and training where the bias is fixed (adapting to a
    scan with the position tables frozen): its CPU backward for queries, keys and values is
    1.4-2 times faster than autograd through the formula. When the bias itself is learnt on a
    CPU, the fused call falls back to a math path with a "safe" softmax (extra passes guarding
    fully masked rows), so the plain formula is used instead: our masks always leave a query
    its own key.
    """
    if q.device.type == "cpu" and torch.is_grad_enabled() and bias.requires_grad:
        logits = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1) + bias
        return logits.softmax(dim=-1) @ v
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)


def window_self_attention(
    qkv: Tensor,
    num_heads: int,
    window: int,
    shifted: bool,
    bias: RelativePositionBias,
) -> Tensor:
    """Multi-head self-attention inside (shifted) windows of a channels-last map.

    Args:
        qkv: ``[B, H, W, 3, C]`` queries, keys and values (heads are contiguous chunks of C).
        num_heads: number of heads; C must be divisible by it.
        window: configured window side (reduced by :func:`resolve_window` on small maps).
        shifted: SW-MSA (cyclic shift by half a window, with mask) instead of W-MSA.
        bias: relative position bias with ``num_heads`` heads.

    Returns:
        ``[B, H, W, C]`` attention output, before the output projection.
    """
    b, h, w, three, c = qkv.shape
    if three != 3 or c % num_heads:
        raise ValueError(f"qkv must be [B, H, W, 3, C] with C % {num_heads} == 0, got {qkv.shape}")
    win, shift = resolve_window(h, w, window, shifted)
    plan = window_plan(h, w, win, shift, qkv.device, qkv.dtype)
    gather, scatter = plan.batch_indices(b)
    n = win * win
    head_dim = c // num_heads
    tokens = qkv.reshape(b * h * w, 3 * c).index_select(0, gather)
    q, k, v = tokens.view(-1, n, 3, num_heads, head_dim).permute(2, 0, 3, 1, 4)
    attn_bias = bias(win).to(q.dtype)[None]  # [1, heads, N, N]
    p = b * plan.n_plain
    # Each group's output is written straight into the windowed token buffer (one copy each).
    out = q.new_empty(q.shape[0], n, num_heads, head_dim)  # [B * nW, N, heads, d]
    if p:
        plain = scaled_dot_product_attention(q[:p], k[:p], v[:p], attn_bias)
        out[:p] = plain.transpose(1, 2)
    if plan.mask is not None:
        # The per-window mask cannot broadcast over the batch as a strided 4-D tensor (5-D
        # inputs fall back to a slow kernel), so it is materialised for the masked windows only.
        masked_bias = (plan.mask[:, None] + attn_bias).repeat(b, 1, 1, 1)
        masked = scaled_dot_product_attention(q[p:], k[p:], v[p:], masked_bias)
        out[p:] = masked.transpose(1, 2)
    out = out.view(-1, c).index_select(0, scatter)
    return out.view(b, h, w, c)


class WindowMSA(nn.Module):
    """Window multi-head self-attention without output projection: qkv linear, relative
    position bias, attention in plain or shifted windows. ``in_dim`` -> ``dim`` channels.

    :class:`WindowAttention` adds the projection; the StyleSwin block runs two of these (one
    plain, one shifted) on halves of the heads and projects their concatenation.
    """

    def __init__(
        self, in_dim: int, dim: int, num_heads: int, window: int, shifted: bool = False
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.window = window
        self.shifted = shifted
        self.qkv = nn.Linear(in_dim, 3 * dim)
        self.relative_position_bias = RelativePositionBias(window, num_heads)

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, _ = x.shape
        qkv = self.qkv(x).view(b, h, w, 3, self.dim)
        return window_self_attention(
            qkv, self.num_heads, self.window, self.shifted, self.relative_position_bias
        )

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_heads={self.num_heads}, window={self.window}, "
            f"shifted={self.shifted}"
        )


class WindowAttention(nn.Module):
    """W-MSA / SW-MSA of a Swin block: :class:`WindowMSA` followed by a linear projection."""

    def __init__(self, dim: int, num_heads: int, window: int, shifted: bool = False) -> None:
        super().__init__()
        self.msa = WindowMSA(dim, dim, num_heads, window, shifted)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.msa(x))


class Mlp(nn.Module):
    """Transformer feed-forward: linear - GELU - linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwinBlock(nn.Module):
    """Pre-norm Swin block: x + attn(LN(x)), then x + MLP(LN(x)); shifted windows if asked."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window: int = 8,
        shifted: bool = False,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window, shifted)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class RSTB(nn.Module):
    """Residual Swin Transformer Block (SwinIR): ``depth`` Swin blocks alternating W-MSA and
    SW-MSA, a 3x3 convolution on the image-shaped map, plus the group input."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window: int = 8,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window, shifted=i % 2 == 1, mlp_ratio=mlp_ratio)
            for i in range(depth)
        )
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)
        self.blocks.apply(init_transformer_weights)

    def forward(self, x: Tensor) -> Tensor:
        y = x
        for block in self.blocks:
            y = block(y)
        y = self.conv(y.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + y


class PatchMerging(nn.Module):
    """Halve the resolution: concatenate each 2x2 neighbourhood (4C), LayerNorm, linear to
    ``out_dim``. Odd heights/widths are zero-padded to even first."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)
        init_transformer_weights(self.norm)
        init_transformer_weights(self.reduction)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[1:3]
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat(
            [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1
        )
        return self.reduction(self.norm(x))
