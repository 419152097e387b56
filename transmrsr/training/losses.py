"""Stage-2 super-resolution loss: L1 + content + style (SPEC section 4).

``content`` is the MSE between feature maps of the prediction and of the target, ``style`` the
MSE between their Gram matrices (normalised by ``C*H*W``), both averaged over the chosen layers.
The default feature extractor is VGG19 (indices 2, 4, 7, 10 of torchvision's
``vgg19().features``), loaded from a local weights file because this package neither depends on
torchvision nor downloads anything. Without that file the loss refuses to run rather than
silently training without its perceptual terms; setting both perceptual weights to zero is the
explicit way to train with L1 alone. A frozen stage-1 discriminator can stand in for VGG as a
"domain features available offline" backbone.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transmrsr.errors import TransMRSRError
from transmrsr.models.styleswin import StyleGAN2Discriminator

__all__ = [
    "VGG19_CONFIG",
    "VGG19_WEIGHTS_HINT",
    "DiscriminatorFeatures",
    "PerceptualLoss",
    "SRLoss",
    "VGG19Features",
    "build_sr_loss",
    "gram_matrix",
]

log = logging.getLogger(__name__)

#: VGG19 ("config E"): conv widths, ``"M"`` = 2x2 max pool. Same as torchvision's ``cfgs["E"]``.
VGG19_CONFIG: tuple[int | str, ...] = (
    64, 64, "M",
    128, 128, "M",
    256, 256, 256, 256, "M",
    512, 512, 512, 512, "M",
    512, 512, 512, 512, "M",
)  # fmt: skip

#: Appended to every weight-loading error so that the user knows how to fix it.
VGG19_WEIGHTS_HINT = (
    "use torchvision's ImageNet VGG19 state dict, the file vgg19-dcbb9e9d.pth "
    "(https://download.pytorch.org/models/vgg19-dcbb9e9d.pth), and pass it with --vgg-weights "
    "FILE or the config's vgg_weights; or set the content and style weights to 0"
)

#: ImageNet statistics the torchvision VGG19 was trained with (RGB, inputs on a 0..1 scale).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DEFAULT_VGG_LAYERS: tuple[int, ...] = (2, 4, 7, 10)


def _vgg19_layers(n_modules: int | None = None) -> list[nn.Module]:
    """torchvision's ``vgg19().features`` modules in order, truncated to ``n_modules``.

    Module indices must match torchvision's exactly because the state-dict keys are
    ``features.{index}.weight``; ReLUs are not in-place so that a feature map taken at a conv
    index is not overwritten by the following ReLU.
    """
    layers: list[nn.Module] = []
    in_ch = 3
    for v in VGG19_CONFIG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            out_ch = int(v)
            layers.append(nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1))
            layers.append(nn.ReLU(inplace=False))
            in_ch = out_ch
    return layers if n_modules is None else layers[:n_modules]


N_VGG19_MODULES = len(_vgg19_layers())  # 37: indices 0..36


def _freeze(module: nn.Module) -> None:
    """Fixed feature extractor: no parameter updates, no dropout/batch-norm training behaviour."""
    for p in module.parameters():
        p.requires_grad_(False)
    module.eval()


class _FrozenBackbone(nn.Module):
    """A feature extractor that stays in eval mode even when the surrounding model trains."""

    def train(self, mode: bool = True) -> _FrozenBackbone:
        # The loss is a submodule of whatever the trainer calls .train() on; a frozen extractor
        # must not flip into training mode with it.
        return super().train(False)


class VGG19Features(_FrozenBackbone):
    """Frozen VGG19 feature maps of single-channel images, torchvision-compatible weights.

    ``features`` has torchvision's ``vgg19().features`` layout, truncated after the deepest
    requested index, so a torchvision state dict loads by key name (``classifier.*`` keys in the
    file are ignored). ``forward`` returns the outputs of the modules at ``layers``.
    """

    def __init__(self, layers: Sequence[int] = DEFAULT_VGG_LAYERS) -> None:
        super().__init__()
        layers = tuple(int(i) for i in layers)
        if not layers:
            raise ValueError("layers must name at least one vgg19().features index")
        if any(i < 0 or i >= N_VGG19_MODULES for i in layers):
            raise ValueError(f"vgg19().features indices are 0..{N_VGG19_MODULES - 1}, got {layers}")
        self.layers = layers
        # Only the modules up to the deepest requested layer: no dead compute, no dead weights.
        self.features = nn.Sequential(*_vgg19_layers(max(layers) + 1))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        _freeze(self)

    @classmethod
    def from_file(
        cls, path: str | Path, layers: Sequence[int] = DEFAULT_VGG_LAYERS
    ) -> VGG19Features:
        """Load torchvision VGG19 weights from a ``.pth``/``.pt`` or ``.safetensors`` file.

        Raises:
            TransMRSRError: the file is missing or unreadable, or lacks (or has wrongly shaped)
                ``features.*`` keys needed by the requested layers.
        """
        model = cls(layers)
        state = _read_state_dict(Path(path))
        own = model.state_dict()
        for key, param in own.items():
            if key not in state:
                raise TransMRSRError(
                    f"VGG19 weights file {path} has no key {key!r}; {VGG19_WEIGHTS_HINT}"
                )
            value = state[key]
            if not isinstance(value, Tensor) or tuple(value.shape) != tuple(param.shape):
                shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise TransMRSRError(
                    f"VGG19 weights file {path}: key {key!r} has shape {shape}, expected "
                    f"{tuple(param.shape)}; {VGG19_WEIGHTS_HINT}"
                )
        model.load_state_dict({k: state[k] for k in own}, strict=True)
        log.info("loaded VGG19 weights from %s (layers %s)", path, model.layers)
        return model

    def forward(self, x: Tensor) -> list[Tensor]:
        """Feature maps of ``x`` ``[B, 1, H, W]`` on the network's 0..1 scale.

        The grey image is replicated to RGB and normalised with ImageNet mean/std because that
        is the input distribution the torchvision VGG19 weights were trained on.
        """
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"expected [B, 1, H, W] images, got {tuple(x.shape)}")
        h = (x.expand(-1, 3, -1, -1) - self.mean) / self.std
        out: list[Tensor] = []
        wanted = set(self.layers)
        for i, module in enumerate(self.features):
            h = module(h)
            if i in wanted:
                out.append(h)
        # Return in the order requested, not in network order.
        by_index = dict(zip(sorted(wanted), out, strict=True))
        return [by_index[i] for i in self.layers]


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """Read a state dict, turning every failure into a one-line :class:`TransMRSRError`."""
    if not path.is_file():
        raise TransMRSRError(f"VGG19 weights file not found: {path}; {VGG19_WEIGHTS_HINT}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            # weights_only: a weights file must never be able to run code on load.
            state = torch.load(path, map_location="cpu", weights_only=True)
    except TransMRSRError:
        raise
    except Exception as exc:  # any reader failure is a user-fixable bad file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TransMRSRError(
            f"cannot read VGG19 weights file {path}: {first}; {VGG19_WEIGHTS_HINT}"
        ) from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise TransMRSRError(
            f"VGG19 weights file {path} does not hold a state dict; {VGG19_WEIGHTS_HINT}"
        )
    return state


class DiscriminatorFeatures(_FrozenBackbone):
    """Frozen stage-1 discriminator feature maps as a perceptual backbone.

    Useful when no VGG19 weights are available offline: the discriminator was trained on MR
    slices, so its features are domain features. ``layers`` index
    :meth:`StyleGAN2Discriminator.features` (0 = after FromRGB, then one per residual block);
    the default takes all of them. Images are passed as given, on the network's 0..1 scale.
    The discriminator is deep-copied so that freezing it does not affect a caller who keeps
    training the original.
    """

    def __init__(
        self, discriminator: StyleGAN2Discriminator, layers: Sequence[int] | None = None
    ) -> None:
        super().__init__()
        self.discriminator = copy.deepcopy(discriminator)
        n = len(self.discriminator.blocks) + 1
        self.layers = tuple(range(n)) if layers is None else tuple(int(i) for i in layers)
        if not self.layers or any(i < 0 or i >= n for i in self.layers):
            raise ValueError(f"discriminator feature indices are 0..{n - 1}, got {self.layers}")
        _freeze(self)

    def forward(self, x: Tensor) -> list[Tensor]:
        """Feature maps of ``x`` ``[B, 1, H, W]`` at ``layers``."""
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"expected [B, 1, H, W] images, got {tuple(x.shape)}")
        feats = self.discriminator.features(x)
        return [feats[i] for i in self.layers]


def gram_matrix(f: Tensor) -> Tensor:
    """Gram matrix ``[B, C, C]`` of features ``[B, C, H, W]``, divided by ``C*H*W``.

    The normalisation (SPEC section 4) makes the style term comparable across layers of
    different size.
    """
    b, c, h, w = f.shape
    flat = f.reshape(b, c, h * w)
    return torch.bmm(flat, flat.transpose(1, 2)) / (c * h * w)


class PerceptualLoss(nn.Module):
    """Content (feature MSE) and style (Gram MSE) terms, each averaged over the backbone layers."""

    def __init__(
        self, backbone: nn.Module, content_weight: float = 0.5, style_weight: float = 0.5
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.content_weight = float(content_weight)
        self.style_weight = float(style_weight)

    def forward(self, pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """Unweighted ``(content, style)`` losses; the weights are applied by :class:`SRLoss`."""
        pred_feats = self.backbone(pred)
        # The target is data: no graph through it saves memory and time.
        with torch.no_grad():
            target_feats = self.backbone(target)
        content = torch.stack(
            [F.mse_loss(p, t) for p, t in zip(pred_feats, target_feats, strict=True)]
        ).mean()
        style = torch.stack(
            [
                F.mse_loss(gram_matrix(p), gram_matrix(t))
                for p, t in zip(pred_feats, target_feats, strict=True)
            ]
        ).mean()
        return content, style


class SRLoss(nn.Module):
    """Stage-2 loss ``L1 + content_weight * content + style_weight * style``.

    With both perceptual weights zero no backbone is needed (or run); with a positive weight and
    no backbone construction fails, so training can never silently drop the perceptual terms.
    """

    def __init__(
        self,
        backbone: nn.Module | None = None,
        content_weight: float = 0.5,
        style_weight: float = 0.5,
    ) -> None:
        super().__init__()
        if content_weight < 0 or style_weight < 0:
            raise TransMRSRError(
                f"perceptual loss weights must be >= 0, got content {content_weight}, "
                f"style {style_weight}"
            )
        self.content_weight = float(content_weight)
        self.style_weight = float(style_weight)
        self.perceptual: PerceptualLoss | None = None
        if self.content_weight > 0 or self.style_weight > 0:
            if backbone is None:
                raise TransMRSRError(
                    "perceptual loss needs VGG19 weights: pass --vgg-weights FILE or set the "
                    "weights to 0"
                )
            self.perceptual = PerceptualLoss(backbone, self.content_weight, self.style_weight)

    def forward(self, pred: Tensor, target: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Total loss (differentiable) and its parts as floats for logging."""
        if pred.shape != target.shape:
            raise ValueError(
                f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ"
            )
        l1 = F.l1_loss(pred, target)
        total = l1
        parts = {"l1": float(l1.detach())}
        if self.perceptual is not None:
            content, style = self.perceptual(pred, target)
            total = total + self.content_weight * content + self.style_weight * style
            parts["content"] = float(content.detach())
            parts["style"] = float(style.detach())
        else:
            parts["content"] = 0.0
            parts["style"] = 0.0
        parts["total"] = float(total.detach())
        return total, parts


def build_sr_loss(
    *,
    backbone: str = "vgg19",
    vgg_weights: str | Path | None,
    content_weight: float = 0.5,
    style_weight: float = 0.5,
    discriminator: StyleGAN2Discriminator | None = None,
) -> SRLoss:
    """The trainer's stage-2 loss from config values.

    ``backbone`` is ``"vgg19"`` (needs ``vgg_weights``) or ``"discriminator"`` (needs a
    stage-1 ``discriminator``). With both weights zero nothing is loaded.
    """
    if content_weight == 0 and style_weight == 0:
        log.info("perceptual loss disabled (content and style weights are 0): L1 only")
        return SRLoss(None, 0.0, 0.0)
    net: nn.Module | None
    if backbone == "vgg19":
        net = None if vgg_weights is None else VGG19Features.from_file(vgg_weights)
    elif backbone == "discriminator":
        if discriminator is None:
            raise TransMRSRError(
                "perceptual backbone 'discriminator' needs a stage-1 discriminator; "
                "use backbone 'vgg19' with --vgg-weights FILE or set the weights to 0"
            )
        net = DiscriminatorFeatures(discriminator)
    else:
        raise TransMRSRError(
            f"unknown perceptual backbone {backbone!r}; choose 'vgg19' or 'discriminator'"
        )
    return SRLoss(net, content_weight, style_weight)
