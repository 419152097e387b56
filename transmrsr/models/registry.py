"""One table of the super-resolution architectures, and the config form saved in checkpoints.

Everything that builds a network by name (the command line, training, checkpoints, the
benchmark) goes through this module, so adding an architecture is one line in
:data:`ARCHITECTURES`. Modules are imported only when an architecture is used, so that a
slow or broken import of one architecture never affects the others.

A checkpoint stores :func:`config_to_dict`'s ``{"arch": name, "config": {...}}``; the config
part is plain data that JSON can hold (a JSON round trip turns its tuples into lists), and
:func:`config_from_dict` rebuilds the frozen config from either form, validation included.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from transmrsr.errors import TransMRSRError


@dataclass(frozen=True)
class ArchitectureEntry:
    """Where an architecture lives: ``module`` defines ``model``, ``config`` and ``PRESETS``;
    ``prior``: the generative prior it loads (a :mod:`transmrsr.models.priors` name), if any."""

    module: str
    model: str
    config: str
    prior: str | None = None


#: Super-resolution networks by name, all ``[B, 1, H, W] -> [B, 1, H, W]`` but MINet, which
#: takes ``[B, 2, H, W]`` (the plane and its guide, ``config.guide_channels`` = 1) and returns
#: ``[B, 1, H, W]``. The generators and the discriminator of the priors (StyleSwin for
#: TransMRSR, StyleGAN2 for GFP-GAN) are not SR networks and are not listed.
ARCHITECTURES: dict[str, ArchitectureEntry] = {
    "transmrsr": ArchitectureEntry(
        "transmrsr.models.transmrsr", "TransMRSR", "TransMRSRConfig", prior="styleswin"
    ),
    "edsr": ArchitectureEntry("transmrsr.models.edsr", "EDSR", "EDSRConfig"),
    "swinir": ArchitectureEntry("transmrsr.models.swinir", "SwinIR", "SwinIRConfig"),
    "restormer": ArchitectureEntry("transmrsr.models.restormer", "Restormer", "RestormerConfig"),
    "minet": ArchitectureEntry("transmrsr.models.minet", "MINet", "MINetConfig"),
    "gfpgan": ArchitectureEntry(
        "transmrsr.models.gfpgan", "GFPGAN", "GFPGANConfig", prior="stylegan2"
    ),
}

DEFAULT_PRESET = "compact"


def list_architectures() -> list[str]:
    """Names accepted by :func:`get_config` and :func:`build_model`, in table order."""
    return list(ARCHITECTURES)


def _entry(arch: str) -> ArchitectureEntry:
    try:
        return ARCHITECTURES[arch]
    except KeyError:
        raise TransMRSRError(
            f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}"
        ) from None


def _module(arch: str) -> Any:
    entry = _entry(arch)
    try:
        return importlib.import_module(entry.module)
    except ModuleNotFoundError as exc:
        if exc.name != entry.module:
            raise  # a dependency of the module is missing: a broken install, not a user error
        raise TransMRSRError(
            f"architecture {arch!r} is not available in this installation ({entry.module} "
            "is missing)"
        ) from None


def prior_of(arch: str) -> str | None:
    """The generative prior ``arch`` loads (``"styleswin"``, ``"stylegan2"``), or ``None``."""
    return _entry(arch).prior


def model_class(arch: str) -> type[nn.Module]:
    """The network class of ``arch``."""
    return getattr(_module(arch), _entry(arch).model)


def config_class(arch: str) -> type:
    """The frozen config dataclass of ``arch``."""
    return getattr(_module(arch), _entry(arch).config)


def list_presets(arch: str) -> list[str]:
    """Preset names of ``arch`` (at least "paper", "compact" and "tiny")."""
    return list(_module(arch).PRESETS)


def _is_config_of(config: Any, arch: str) -> bool:
    return isinstance(config, config_class(arch))


def get_config(arch: str, preset: str = DEFAULT_PRESET, **overrides: Any) -> Any:
    """The ``preset`` config of ``arch`` with some fields replaced.

    ``overrides`` are field names of the config dataclass (e.g. ``n_blocks=8``); values go
    through the config's own validation, whose ValueError becomes a :class:`TransMRSRError`
    because overrides come from users.
    """
    presets = _module(arch).PRESETS
    if preset not in presets:
        raise TransMRSRError(
            f"unknown config {preset!r} for architecture {arch!r}; choose one of "
            f"{', '.join(presets)}"
        )
    return _replace(arch, presets[preset], overrides)


def _replace(arch: str, config: Any, overrides: Mapping[str, Any]) -> Any:
    if not overrides:
        return config
    fields = [f.name for f in dataclasses.fields(config)]
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise TransMRSRError(
            f"unknown option(s) {', '.join(unknown)} for architecture {arch!r}; valid options: "
            f"{', '.join(fields)}"
        )
    try:
        return dataclasses.replace(config, **overrides)
    except (TypeError, ValueError) as exc:
        raise TransMRSRError(f"invalid {arch} config: {exc}") from None


def build_model(arch: str, config_or_preset: Any = DEFAULT_PRESET, **overrides: Any) -> nn.Module:
    """Build ``arch`` from a preset name or a config object, with optional field overrides.

    The model is built on the current default device (so ``with torch.device("meta"):``
    builds a weightless model for counting parameters).
    """
    if isinstance(config_or_preset, str):
        config = get_config(arch, config_or_preset, **overrides)
    elif _is_config_of(config_or_preset, arch):
        config = _replace(arch, config_or_preset, overrides)
    else:
        raise TransMRSRError(
            f"build_model({arch!r}, ...) needs a preset name or a "
            f"{config_class(arch).__name__}, got {type(config_or_preset).__name__}"
        )
    return model_class(arch)(config)


def arch_of_config(config: Any) -> str:
    """The architecture name whose config class ``config`` is (matched by module and name, so
    that no other architecture's module is imported)."""
    cls = type(config)
    for arch, entry in ARCHITECTURES.items():
        if cls.__module__ == entry.module and cls.__qualname__ == entry.config:
            return arch
    raise TransMRSRError(f"{type(config).__name__} is not the config of a known architecture")


def config_to_dict(config: Any) -> dict[str, Any]:
    """``{"arch": name, "config": {...}}``: the JSON-serialisable form saved in checkpoints.

    Nested configs (TransMRSR's and GFP-GAN's ``prior``) become nested dicts; tuples stay
    tuples until the record is written as JSON.
    """
    arch = arch_of_config(config)
    return {"arch": arch, "config": dataclasses.asdict(config)}


def config_from_dict(d: Mapping[str, Any]) -> Any:
    """Rebuild a config from :func:`config_to_dict`'s output (e.g. read from a checkpoint)."""
    if not isinstance(d, Mapping) or "arch" not in d or "config" not in d:
        raise TransMRSRError(
            "a model config record needs the keys 'arch' and 'config', got "
            f"{sorted(d) if isinstance(d, Mapping) else type(d).__name__}"
        )
    arch = d["arch"]
    cls = config_class(arch)
    values = d["config"]
    if not isinstance(values, Mapping):
        raise TransMRSRError(f"the {arch} config record must be a mapping, got {values!r}")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise TransMRSRError(
            f"unknown option(s) {', '.join(unknown)} in the saved {arch} config; valid options: "
            f"{', '.join(sorted(fields))}"
        )
    try:
        return cls.from_dict(dict(values))
    except (TypeError, ValueError) as exc:
        raise TransMRSRError(f"invalid saved {arch} config: {exc}") from None
