"""The generative priors by name: StyleSwin (TransMRSR's) and StyleGAN2 (GFP-GAN's).

``train-prior --arch NAME`` trains one; the prior file records the name (its ``arch``
metadata) next to the config, so that a network that needs one kind of prior refuses the other
in one line instead of failing on mismatched weight names. Both generators have the same
interface (``map_to_w``, ``mean_w``, ``forward(z)``) and both train against the same
:class:`~transmrsr.models.styleswin.StyleGAN2Discriminator`, built from the prior's config.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from transmrsr.errors import TransMRSRError
from transmrsr.models import stylegan2, styleswin

#: Prior architectures: (config class, generator class, presets).
PRIORS: dict[str, tuple[type, type[nn.Module], Mapping[str, Any]]] = {
    "styleswin": (styleswin.StyleSwinConfig, styleswin.StyleSwinGenerator, styleswin.PRESETS),
    "stylegan2": (stylegan2.StyleGAN2Config, stylegan2.StyleGAN2Generator, stylegan2.PRESETS),
}
#: The prior of a file written before prior files recorded their architecture.
DEFAULT_PRIOR = "styleswin"

PriorConfig = styleswin.StyleSwinConfig | stylegan2.StyleGAN2Config


def list_priors() -> list[str]:
    return list(PRIORS)


def _entry(arch: str) -> tuple[type, type[nn.Module], Mapping[str, Any]]:
    try:
        return PRIORS[arch]
    except KeyError:
        raise TransMRSRError(
            f"unknown prior architecture {arch!r}; choose one of {', '.join(PRIORS)}"
        ) from None


def prior_config_class(arch: str) -> type:
    return _entry(arch)[0]


def prior_presets(arch: str) -> Mapping[str, Any]:
    return _entry(arch)[2]


def prior_arch_of(config: Any) -> str:
    """The prior architecture whose config ``config`` is."""
    for arch, (cls, _, _) in PRIORS.items():
        if type(config) is cls:
            return arch
    raise TransMRSRError(f"{type(config).__name__} is not the config of a generative prior")


def prior_config_from_dict(arch: str, values: Mapping[str, Any]) -> PriorConfig:
    """Rebuild a prior config saved with ``to_dict`` (a prior file, a checkpoint)."""
    cls = prior_config_class(arch)
    try:
        return cls.from_dict(dict(values))
    except (TypeError, ValueError) as exc:
        raise TransMRSRError(f"invalid {arch} prior config: {exc}") from None


def build_prior_generator(config: PriorConfig) -> nn.Module:
    """The generator (mapping + synthesis) of a prior config."""
    return _entry(prior_arch_of(config))[1](config)
