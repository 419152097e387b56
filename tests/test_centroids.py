"""SDT centroids: k-means of mapped latents, and their use by TransMRSR."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from transmrsr.errors import TransMRSRError
from transmrsr.models.styleswin import PRESETS as STYLESWIN
from transmrsr.models.styleswin import StyleSwinGenerator
from transmrsr.models.transmrsr import CENTROIDS_KEY, PRESETS, TransMRSR
from transmrsr.training.centroids import fit_centroids, prior_centroids, sample_latents

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_kmeans_finds_separated_clusters():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 10, (3, 16))
    latents = np.concatenate([c + rng.normal(0, 0.1, (200, 16)) for c in centres])
    found = fit_centroids(latents, 3).numpy()
    distance = np.linalg.norm(found[:, None] - centres[None], axis=2)
    assert np.sort(distance.min(axis=1)).max() < 0.1
    assert sorted(distance.argmin(axis=1)) == [0, 1, 2]


def test_bad_latents_are_refused():
    with pytest.raises(TransMRSRError, match="k must be"):
        fit_centroids(np.zeros((3, 4)), 8)
    with pytest.raises(TransMRSRError, match="NaN"):
        fit_centroids(np.full((10, 4), np.nan), 2)


def test_prior_centroids_are_deterministic_and_load_into_transmrsr():
    torch.manual_seed(0)
    generator = StyleSwinGenerator(STYLESWIN["tiny"])
    latents = sample_latents(generator, 500, seed=1)
    assert latents.shape == (500, STYLESWIN["tiny"].style_dim)
    np.testing.assert_array_equal(latents, sample_latents(generator, 500, seed=1, batch_size=64))
    config = dataclasses.replace(PRESETS["tiny"], prior=STYLESWIN["tiny"])
    centroids = prior_centroids(generator, n_latents=500, k=config.n_centroids, seed=1)
    assert torch.equal(
        centroids, prior_centroids(generator, n_latents=500, k=config.n_centroids, seed=1)
    )
    prior = dict(generator.state_dict())
    prior[CENTROIDS_KEY] = centroids
    model = TransMRSR(config)
    model.load_prior(prior)
    assert torch.equal(model.sdt.centroids, centroids)
    out = model(torch.rand(2, 1, config.prior.img_size, config.prior.img_size))
    assert torch.isfinite(out).all()
