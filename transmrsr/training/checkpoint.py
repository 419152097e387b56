"""Checkpoints (resumable training state) and prior files (what stage 2 and inference load).

A *checkpoint* is one ``torch.save`` file holding everything needed to continue a run exactly:
model, EMA and discriminator weights, optimiser and scheduler states, every random-number state
and the position in the data, next to the run's config. It is written atomically, so a run
killed while saving keeps its previous checkpoint intact.

A *prior file* is the product of stage 1 that stage 2 consumes: the EMA generator's weights and,
once :func:`~transmrsr.training.centroids.prior_centroids` has run, the SDT centroids, in a
safetensors file whose metadata holds the prior's architecture (``arch``: ``styleswin`` for
TransMRSR, ``stylegan2`` for GFP-GAN; files without it are StyleSwin priors) and its config as
JSON. Safetensors loads without unpickling, so a prior from elsewhere cannot run code.

Checkpoints and model files are read by :mod:`transmrsr.models.files` (inference reads them
too, and must not depend on training code); this module writes them.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from transmrsr.errors import TransMRSRError
from transmrsr.io import atomic_path
from transmrsr.models.files import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    MODEL_FORMAT,
    read_safetensors,
)
from transmrsr.models.priors import (
    DEFAULT_PRIOR,
    PriorConfig,
    prior_arch_of,
    prior_config_from_dict,
)
from transmrsr.models.registry import prior_of
from transmrsr.models.transmrsr import CENTROIDS_KEY

log = logging.getLogger(__name__)

PRIOR_FORMAT = "transmrsr-prior"


def rng_state() -> dict[str, Any]:
    """Every random-number state a training step can consume (Python, NumPy, torch CPU/CUDA)."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the states captured by :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike[str], state: Mapping[str, Any]) -> Path:
    """Write a training checkpoint atomically (temporary file, then rename)."""
    out = Path(path)
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}
    with atomic_path(out, suffix=".pt") as tmp:
        torch.save(payload, tmp)
    log.debug("checkpoint written: %s", out)
    return out


def save_prior(
    path: str | os.PathLike[str],
    generator_state: Mapping[str, torch.Tensor],
    config: PriorConfig,
    *,
    centroids: torch.Tensor | None = None,
    info: Mapping[str, Any] | None = None,
) -> Path:
    """Write a prior file: generator weights (+ centroids), its architecture (that of
    ``config``) and its config, as safetensors."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in generator_state.items()}
    if centroids is not None:
        tensors[CENTROIDS_KEY] = centroids.detach().to("cpu", torch.float32).contiguous()
    metadata = {
        "format": PRIOR_FORMAT,
        "arch": prior_arch_of(config),
        "config": json.dumps(config.to_dict()),
        "info": json.dumps(dict(info or {})),
    }
    out = Path(path)
    with atomic_path(out, suffix=".safetensors") as tmp:
        save_file(tensors, tmp, metadata=metadata)
    return out


def load_prior(
    path: str | os.PathLike[str],
) -> tuple[dict[str, torch.Tensor], PriorConfig, dict[str, Any]]:
    """Read a prior file: ``(state_dict, config, info)``; centroids under ``CENTROIDS_KEY``.

    The config's class says the prior's architecture (:func:`~transmrsr.models.priors.
    prior_arch_of`)."""
    tensors, metadata = read_safetensors(path, PRIOR_FORMAT, "prior")
    arch = metadata.get("arch", DEFAULT_PRIOR)
    try:
        values = json.loads(metadata["config"])
    except ValueError as exc:
        raise TransMRSRError(f"{path}: unreadable prior config ({exc})") from None
    try:
        config = prior_config_from_dict(arch, values)
    except TransMRSRError as exc:
        raise TransMRSRError(f"{path}: {exc}") from None
    return tensors, config, json.loads(metadata.get("info", "{}"))


def load_prior_for(
    path: str | os.PathLike[str], arch: str
) -> tuple[dict[str, torch.Tensor], PriorConfig, dict[str, Any]]:
    """:func:`load_prior` of a prior that network ``arch`` (a registry name) loads: a prior
    of another architecture is a one-line error naming both."""
    wanted = prior_of(arch)
    state, config, info = load_prior(path)
    found = prior_arch_of(config)
    if wanted is not None and found != wanted:
        raise TransMRSRError(
            f"{path}: a {found} prior, but {arch} needs a {wanted} prior (make one with "
            f"'transmrsr train-prior --arch {wanted}')"
        )
    return state, config, info


#: Prefix of the stage-1 discriminator's weights inside a prior file (the optional perceptual
#: backbone of stage 2); :func:`split_prior` separates them from the generator's.
DISCRIMINATOR_PREFIX = "discriminator."


def split_prior(
    state: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """``(generator state incl. centroids, discriminator state or None)`` of a prior file."""
    generator = {k: v for k, v in state.items() if not k.startswith(DISCRIMINATOR_PREFIX)}
    disc = {
        k.removeprefix(DISCRIMINATOR_PREFIX): v
        for k, v in state.items()
        if k.startswith(DISCRIMINATOR_PREFIX)
    }
    return generator, disc or None


def save_model(
    path: str | os.PathLike[str],
    state: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    *,
    info: Mapping[str, Any] | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write inference weights (safetensors) with the network config and run info as metadata.

    ``config`` is :func:`~transmrsr.models.registry.config_to_dict` of the network; floating
    tensors are stored in ``dtype`` (float16 halves the file of a shipped model).
    """
    tensors = {
        k: (v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu()).contiguous()
        for k, v in state.items()
    }
    metadata = {
        "format": MODEL_FORMAT,
        "config": json.dumps(dict(config)),
        "info": json.dumps(dict(info or {})),
    }
    out = Path(path)
    with atomic_path(out, suffix=".safetensors") as tmp:
        save_file(tensors, tmp, metadata=metadata)
    return out
