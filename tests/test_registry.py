"""The architecture table: configs by name, the checkpoint form, errors a user can read."""

from __future__ import annotations

import json

import pytest
import torch

from transmrsr.errors import TransMRSRError
from transmrsr.models import profiling, registry

ARCHS = ("transmrsr", "edsr", "swinir", "restormer", "minet", "gfpgan")
PRESETS = ("paper", "compact", "tiny")


def require(arch: str) -> None:
    """Skip when another engineer's architecture module is not in this checkout yet."""
    pytest.importorskip(registry.ARCHITECTURES[arch].module)


def test_the_table_lists_the_sr_networks():
    assert registry.list_architectures() == list(ARCHS)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("preset", PRESETS)
def test_config_round_trip_and_build(arch, preset):
    """config -> JSON (as in a checkpoint) -> config -> model, on the meta device (no memory,
    so the paper configurations are checked too)."""
    require(arch)
    assert preset in registry.list_presets(arch)
    config = registry.get_config(arch, preset)
    record = registry.config_to_dict(config)
    assert record["arch"] == arch
    restored = registry.config_from_dict(json.loads(json.dumps(record)))
    assert restored == config
    with torch.device("meta"):
        model = registry.build_model(arch, restored)
        same = registry.build_model(arch, preset)
    assert isinstance(model, registry.model_class(arch))
    assert model.config == config
    assert profiling.count_parameters(model) == profiling.count_parameters(same)


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_models_map_a_slice_to_a_slice(arch):
    require(arch)
    torch.manual_seed(0)
    model = registry.build_model(arch, "tiny").eval()
    profiling.fill_missing_centroids(model)
    guides = int(getattr(model.config, "guide_channels", 0))  # MINet: the plane and its guide
    x = torch.randn(2, 1 + guides, 32, 32)
    with torch.no_grad():
        assert model(x).shape == (2, 1, 32, 32)


def test_overrides_replace_fields():
    config = registry.get_config("edsr", "tiny", n_blocks=3)
    assert config.n_blocks == 3
    assert config.n_features == registry.get_config("edsr", "tiny").n_features
    model = registry.build_model("edsr", config, n_features=4)
    assert model.config.n_features == 4 and len(model.body) == 3
    assert registry.build_model("restormer", "tiny", heads=[1, 1, 1, 1]).config.heads == (1,) * 4


def assert_one_line_error(excinfo, *needles: str) -> None:
    message = str(excinfo.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message


def test_unknown_architecture():
    with pytest.raises(TransMRSRError) as excinfo:
        registry.build_model("edsr2")
    assert_one_line_error(excinfo, "edsr2", *ARCHS)
    with pytest.raises(TransMRSRError):
        registry.get_config("unet")


def test_unknown_preset():
    with pytest.raises(TransMRSRError) as excinfo:
        registry.get_config("edsr", "huge")
    assert_one_line_error(excinfo, "huge", "paper", "compact", "tiny")


def test_unknown_or_invalid_override():
    with pytest.raises(TransMRSRError) as excinfo:
        registry.get_config("edsr", "tiny", blocks=3)
    assert_one_line_error(excinfo, "blocks", "n_blocks", "n_features", "res_scale")
    with pytest.raises(TransMRSRError) as excinfo:
        registry.build_model("edsr", "tiny", n_blocks=0)
    assert_one_line_error(excinfo, "n_blocks")


def test_wrong_config_type():
    with pytest.raises(TransMRSRError, match="EDSRConfig"):
        registry.build_model("edsr", registry.get_config("restormer", "tiny"))
    with pytest.raises(TransMRSRError, match="not the config"):
        registry.config_to_dict({"n_blocks": 3})


@pytest.mark.parametrize(
    ("record", "needle"),
    [
        ({"config": {}}, "'arch'"),
        ({"arch": "vdsr", "config": {}}, "vdsr"),
        ({"arch": "edsr", "config": {"n_blocks": 2, "depth": 3}}, "depth"),
        ({"arch": "edsr", "config": {"n_blocks": -2}}, "n_blocks"),
        ({"arch": "edsr", "config": [2, 8]}, "mapping"),
    ],
)
def test_bad_saved_configs(record, needle):
    with pytest.raises(TransMRSRError) as excinfo:
        registry.config_from_dict(record)
    assert_one_line_error(excinfo, needle)


def test_missing_module_is_a_user_error(monkeypatch):
    entry = registry.ArchitectureEntry("transmrsr.models.not_written_yet", "X", "XConfig")
    monkeypatch.setitem(registry.ARCHITECTURES, "ghost", entry)
    with pytest.raises(TransMRSRError, match="not available"):
        registry.get_config("ghost")
    assert registry.get_config("edsr", "tiny").n_blocks >= 1  # the others are unaffected
