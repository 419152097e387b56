"""Checkpoints and prior files: round trips, RNG restore, atomicity, clear refusals."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from transmrsr.cli.main import main
from transmrsr.errors import TransMRSRError
from transmrsr.models.files import load_checkpoint
from transmrsr.models.styleswin import PRESETS, StyleSwinGenerator
from transmrsr.models.transmrsr import CENTROIDS_KEY
from transmrsr.training.checkpoint import (
    load_prior,
    rng_state,
    save_checkpoint,
    save_prior,
    set_rng_state,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _draws() -> tuple[float, float, torch.Tensor]:
    return random.random(), float(np.random.rand()), torch.rand(3)


def test_checkpoint_round_trip_restores_weights_optimiser_and_rng(tmp_path):
    model = torch.nn.Linear(4, 2)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.rand(5, 4)).sum().backward()
    optimiser.step()
    path = save_checkpoint(
        tmp_path / "last.pt",
        {
            "model": model.state_dict(),
            "optimiser": optimiser.state_dict(),
            "rng": rng_state(),
            "progress": {"epoch": 3, "step": 17},
        },
    )
    expected = _draws()
    state = load_checkpoint(path)
    set_rng_state(state["rng"])
    again = _draws()
    assert again[:2] == expected[:2] and torch.equal(again[2], expected[2])
    fresh = torch.nn.Linear(4, 2)
    fresh.load_state_dict(state["model"])
    assert torch.equal(fresh.weight, model.weight)
    assert state["progress"] == {"epoch": 3, "step": 17}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_bad_checkpoints_are_refused(tmp_path):
    with pytest.raises(TransMRSRError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00not a checkpoint")
    with pytest.raises(TransMRSRError, match="cannot read"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": 1}, tmp_path / "foreign.pt")
    with pytest.raises(TransMRSRError, match="not a transmrsr checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")


def test_prior_file_round_trip_and_fit_centroids_command(tmp_path, capsys):
    torch.manual_seed(0)
    config = PRESETS["tiny"]
    generator = StyleSwinGenerator(config)
    path = save_prior(
        tmp_path / "prior.safetensors", generator.state_dict(), config, info={"steps": 10}
    )
    state, loaded_config, info = load_prior(path)
    assert loaded_config == config and info == {"steps": 10}
    assert CENTROIDS_KEY not in state
    assert all(torch.equal(state[k], v) for k, v in generator.state_dict().items())
    code = main(["fit-centroids", str(path), "--n-latents", "400", "--k", "8"])
    assert code == 0, capsys.readouterr().err
    state, _, info = load_prior(path)
    assert state[CENTROIDS_KEY].shape == (8, config.style_dim)
    assert info["centroids"]["n_latents"] == 400
    assert main(["fit-centroids", str(path), "--k", "0"]) == 2
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    assert main(["fit-centroids", str(tmp_path / "bad.safetensors")]) == 2
    assert "cannot read the prior" in capsys.readouterr().err
