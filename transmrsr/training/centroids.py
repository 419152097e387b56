"""Self-distilled truncation centroids (SPEC 3.4): k-means of the prior's mapped latents.

After stage 1, many random ``z`` are mapped through the prior's mapping network and the
resulting ``w`` are clustered into ``k`` centroids with scikit-learn's k-means. The centroids are
stored with the prior (key :data:`~transmrsr.models.transmrsr.CENTROIDS_KEY`) and loaded into
TransMRSR's :class:`~transmrsr.models.transmrsr.SelfDistilledTruncation` with the decoder
weights. Done once per prior; deterministic for a seed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from sklearn.cluster import KMeans
from torch import nn

from transmrsr.errors import TransMRSRError
from transmrsr.models.priors import build_prior_generator
from transmrsr.models.transmrsr import CENTROIDS_KEY

log = logging.getLogger(__name__)


@torch.no_grad()
def sample_latents(
    generator: nn.Module, n: int, *, seed: int = 0, batch_size: int = 4096
) -> np.ndarray:
    """``n`` latents ``w = mapping(z)``, ``z ~ N(0, I)``, as float64 ``[n, style_dim]``."""
    if n < 1:
        raise TransMRSRError(f"need at least one latent, got {n}")
    device = next(generator.parameters()).device
    style_dim = generator.config.style_dim
    rng = torch.Generator().manual_seed(seed)
    out = np.empty((n, style_dim), dtype=np.float64)
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        z = torch.randn(stop - start, style_dim, generator=rng)
        out[start:stop] = generator.map_to_w(z.to(device)).double().cpu().numpy()
    return out


def fit_centroids(latents: np.ndarray, k: int = 8, *, seed: int = 0) -> torch.Tensor:
    """k-means centroids ``[k, style_dim]`` (float32) of latent vectors ``[n, style_dim]``."""
    latents = np.asarray(latents, dtype=np.float64)
    if latents.ndim != 2:
        raise TransMRSRError(f"latents must be [n, style_dim], got shape {latents.shape}")
    if not 1 <= k <= latents.shape[0]:
        raise TransMRSRError(f"k must be between 1 and the number of latents ({latents.shape[0]})")
    if not np.all(np.isfinite(latents)):
        raise TransMRSRError("latents contain NaN or infinite values: the prior is broken")
    kmeans = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(latents)
    sizes = np.bincount(kmeans.labels_, minlength=k)
    log.info("k-means of %d latents into %d centroids; cluster sizes %s", len(latents), k, sizes)
    return torch.from_numpy(kmeans.cluster_centers_.astype(np.float32))


def prior_centroids(
    generator: nn.Module, *, n_latents: int = 60_000, k: int = 8, seed: int = 0
) -> torch.Tensor:
    """The SDT centroids of a prior: :func:`fit_centroids` of :func:`sample_latents`."""
    return fit_centroids(sample_latents(generator, n_latents, seed=seed), k, seed=seed)


def add_centroids_to_prior(
    prior: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    n_latents: int = 60_000,
    k: int = 8,
    seed: int = 0,
) -> Path:
    """Fit the SDT centroids of a prior file and write the prior with them (to ``out``, or
    over ``prior`` atomically). The discriminator stored with the prior is kept: stage 2 may use
    its features for the perceptual loss."""
    from transmrsr.training.checkpoint import (
        DISCRIMINATOR_PREFIX,
        load_prior,
        save_prior,
        split_prior,
    )

    if not 1 <= k <= n_latents:
        raise TransMRSRError(f"need 1 <= k <= n-latents, got k={k}, n={n_latents}")
    state, config, info = load_prior(prior)
    state.pop(CENTROIDS_KEY, None)
    generator_state, discriminator_state = split_prior(state)
    generator = build_prior_generator(config)
    generator.load_state_dict(generator_state)
    generator.eval()
    centroids = prior_centroids(generator, n_latents=n_latents, k=k, seed=seed)
    info = {**info, "centroids": {"n_latents": n_latents, "k": k, "seed": seed}}
    if discriminator_state is not None:
        generator_state.update(
            {DISCRIMINATOR_PREFIX + name: v for name, v in discriminator_state.items()}
        )
    return save_prior(out or prior, generator_state, config, centroids=centroids, info=info)
