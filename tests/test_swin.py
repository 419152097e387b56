"""Swin building blocks: windows, shifted-window mask, relative positions, padding."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from transmrsr.models.swin import (
    RSTB,
    PatchMerging,
    RelativePositionBias,
    SwinBlock,
    attention_mask,
    relative_position_index,
    resolve_window,
    window_partition,
    window_reverse,
    window_self_attention,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def reference_attention(
    qkv: torch.Tensor, num_heads: int, window: int, shifted: bool, bias: RelativePositionBias
) -> torch.Tensor:
    """Brute-force windowed attention: full attention over all tokens of the map, with the
    allowed pairs derived independently from the shifted-window geometry (same window of the
    rolled, padded map, and both tokens on the same side of the wrap-around on each axis)."""
    b, h, w, _, c = qkv.shape
    win, shift = resolve_window(h, w, window, shifted)
    hp, wp = h + (-h) % win, w + (-w) % win
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    sy, sx = (ys - shift) % hp, (xs - shift) % wp  # position in the rolled frame
    wrap_y, wrap_x = ys < shift, xs < shift  # rolled around from the top / left border
    allowed = (
        (sy[:, None] // win == sy[None] // win)
        & (sx[:, None] // win == sx[None] // win)
        & (wrap_y[:, None] == wrap_y[None])
        & (wrap_x[:, None] == wrap_x[None])
    )
    dy = (sy % win)[:, None] - (sy % win)[None]
    dx = (sx % win)[:, None] - (sx % win)[None]
    table_w = bias.window
    index = (dy + table_w - 1) * (2 * table_w - 1) + dx + table_w - 1
    rel = bias.table[index.clamp(min=0)].permute(2, 0, 1)  # [heads, L, L]
    d = c // num_heads
    q, k, v = qkv.reshape(b, h * w, 3, num_heads, d).permute(2, 0, 3, 1, 4)
    logits = q @ k.transpose(-1, -2) / math.sqrt(d) + rel
    attn = logits.masked_fill(~allowed, float("-inf")).softmax(-1)
    return (attn @ v).transpose(1, 2).reshape(b, h, w, c)


@settings(max_examples=25, deadline=None)
@given(
    b=st.integers(1, 2),
    rows=st.integers(1, 4),
    cols=st.integers(1, 4),
    window=st.sampled_from([1, 2, 4, 8]),
    c=st.integers(1, 5),
)
def test_window_partition_roundtrip(b, rows, cols, window, c):
    x = torch.randn(b, rows * window, cols * window, c)
    windows = window_partition(x, window)
    assert windows.shape == (b * rows * cols, window * window, c)
    # The first window is the top-left window x window block, row-major.
    assert torch.equal(windows[0], x[0, :window, :window].reshape(-1, c))
    assert torch.equal(window_reverse(windows, window, rows * window, cols * window), x)


def test_resolve_window_follows_swin_rule():
    assert resolve_window(64, 64, 8, shifted=True) == (8, 4)
    assert resolve_window(64, 64, 8, shifted=False) == (8, 0)
    assert resolve_window(8, 8, 8, shifted=True) == (8, 0)  # one window: nothing to shift
    assert resolve_window(4, 40, 8, shifted=True) == (4, 0)
    assert resolve_window(9, 30, 8, shifted=True) == (8, 4)


@pytest.mark.parametrize("window", [1, 2, 7, 8])
def test_relative_position_index_shape_range_and_symmetry(window):
    index = relative_position_index(window)
    n = window * window
    assert index.shape == (n, n)
    assert index.dtype == torch.long
    assert int(index.min()) == 0
    assert int(index.max()) == (2 * window - 1) ** 2 - 1
    # Every relative offset occurs, and offset (0, 0) sits on the diagonal only.
    assert index.unique().numel() == (2 * window - 1) ** 2
    centre = (window - 1) * (2 * window - 1) + window - 1
    assert torch.equal(index == centre, torch.eye(n, dtype=torch.bool))
    # Opposite offsets map to mirrored table entries.
    assert torch.equal(index + index.t(), torch.full_like(index, 2 * centre))


def test_relative_position_index_small_window_uses_centre_of_table():
    small, table = 4, 8
    index = relative_position_index(small, table)
    full = relative_position_index(table)
    coords = [(y, x) for y in range(small) for x in range(small)]
    for i, (yi, xi) in enumerate(coords):
        for j, (yj, xj) in enumerate(coords):
            assert index[i, j] == full[yi * table + xi, yj * table + xj]
    with pytest.raises(ValueError):
        relative_position_index(9, 8)


def test_shifted_mask_allows_only_same_region_pairs():
    h = w = 16
    window, shift = 8, 4
    mask = attention_mask(h, w, window, shift)  # windows of the rolled frame, row-major
    assert mask.shape == (4, 64, 64)
    # Rebuild the rolled frame's original coordinates and check the region rule directly.
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    rolled_y = torch.roll(ys, (-shift, -shift), (0, 1))
    rolled_x = torch.roll(xs, (-shift, -shift), (0, 1))
    win_y = window_partition(rolled_y[None, :, :, None], window)[..., 0]
    win_x = window_partition(rolled_x[None, :, :, None], window)[..., 0]
    local = torch.stack(
        torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij"), -1
    ).reshape(-1, 2)
    for n in range(4):
        # Two tokens share a region iff the roll did not separate them: their displacement
        # inside the window equals their displacement in the original map.
        orig = torch.stack([win_y[n], win_x[n]], -1)
        same = ((orig[:, None] - orig[None]) == (local[:, None] - local[None])).all(-1)
        assert torch.equal(mask[n], same)
    # The top-left window of the rolled frame is interior: everything allowed.
    assert mask[0].all()
    # The bottom-right window mixes four regions: exactly 4 blocks of 16 allowed per row.
    assert (mask[3].sum(dim=1) == 16).all()


def test_padding_mask_excludes_padded_keys():
    mask = attention_mask(5, 6, 4, 0)  # padded to 8 x 8, four windows
    assert mask.shape == (4, 16, 16)
    # Bottom-right window: rows 4..7, cols 4..7 of the padded map; real tokens (4, 4), (4, 5).
    real = torch.zeros(16, dtype=torch.bool)
    real[[0, 1]] = True
    assert torch.equal(mask[3][0], real)
    assert torch.equal(mask[3][1], real)
    # A padding query only sees the real keys and itself.
    assert torch.equal(mask[3][5], real | (torch.arange(16) == 5))


@pytest.mark.parametrize(
    ("h", "w", "shifted"),
    [(16, 16, False), (16, 16, True), (20, 27, True), (20, 27, False), (5, 13, True), (3, 3, True)],
)
@pytest.mark.parametrize("grad", [True, False])
def test_window_attention_matches_brute_force(h, w, shifted, grad):
    torch.manual_seed(0)
    bias = RelativePositionBias(8, 2).double()
    qkv = torch.randn(2, h, w, 3, 16, dtype=torch.float64)
    with torch.set_grad_enabled(grad):  # training (plain formula) and inference (fused) paths
        out = window_self_attention(qkv, 2, 8, shifted, bias)
    ref = reference_attention(qkv, 2, 8, shifted, bias)
    assert out.shape == (2, h, w, 16)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("learn_bias", [True, False])
def test_window_attention_gradients_match_brute_force(learn_bias):
    """Both backward paths: the formula (bias learnt) and the fused kernel (bias frozen, as the
    adaptation to a scan runs it)."""
    torch.manual_seed(1)
    bias = RelativePositionBias(8, 2)
    bias.table.requires_grad_(learn_bias)
    qkv = torch.randn(2, 20, 27, 3, 16, requires_grad=True)
    out = window_self_attention(qkv, 2, 8, True, bias)
    g = torch.randn_like(out)
    inputs = [qkv, bias.table] if learn_bias else [qkv]
    grads = torch.autograd.grad((out * g).sum(), inputs)
    bias64 = RelativePositionBias(8, 2).double()
    bias64.table.data.copy_(bias.table.data)
    qkv64 = qkv.detach().double().requires_grad_()
    ref = reference_attention(qkv64, 2, 8, True, bias64)
    refs = torch.autograd.grad((ref * g.double()).sum(), [qkv64, bias64.table])
    for grad, expected in zip(grads, refs, strict=False):
        torch.testing.assert_close(grad, expected.float(), rtol=1e-4, atol=1e-5)


def test_shifted_attention_does_not_cross_regions():
    """Perturbing a token changes exactly the outputs of the tokens in its shifted region."""
    torch.manual_seed(2)
    bias = RelativePositionBias(4, 1).double()
    qkv = torch.randn(1, 8, 8, 3, 4, dtype=torch.float64)
    base = window_self_attention(qkv, 1, 4, True, bias)
    moved = qkv.clone()
    moved[0, 0, 0] += 1.0  # top-left token: wrapped into the bottom-right window, alone
    changed = (window_self_attention(moved, 1, 4, True, bias) - base).abs().sum(-1)[0] > 0
    # Its region in the rolled frame holds the original tokens (0..1, 0..1).
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[:2, :2] = True
    assert torch.equal(changed, expected)


@pytest.mark.parametrize(("h", "w"), [(16, 16), (13, 21), (7, 9), (1, 5), (33, 8)])
def test_blocks_keep_shape_for_any_size(h, w):
    torch.manual_seed(0)
    x = torch.randn(2, h, w, 16)
    assert SwinBlock(16, 2, 8, shifted=True)(x).shape == x.shape
    assert RSTB(16, 2, 2, 8)(x).shape == x.shape
    merged = PatchMerging(16, 24)(x)
    assert merged.shape == (2, (h + 1) // 2, (w + 1) // 2, 24)


def test_patch_merging_concatenates_2x2_neighbours():
    merge = PatchMerging(1, 4)
    with torch.no_grad():
        merge.norm.weight.fill_(1.0)
        merge.norm.bias.zero_()
        merge.reduction.weight.copy_(torch.eye(4))
    x = torch.arange(16.0).view(1, 4, 4, 1)
    out = merge(x)
    # Neighbourhood of the top-left output: (0,0), (1,0), (0,1), (1,1) = 0, 4, 1, 5.
    values = torch.tensor([0.0, 4.0, 1.0, 5.0])
    expected = (values - values.mean()) / torch.sqrt(values.var(unbiased=False) + 1e-5)
    torch.testing.assert_close(out[0, 0, 0], expected)
