"""Devices and precision: what ``auto`` means for training and for restoring, and that a
bf16 restore is the fp32 one to within bf16's rounding."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from conftest import oriented_affine, phantom

from transmrsr.cli.main import main
from transmrsr.degradation import degrade
from transmrsr.devices import (
    BF16_CPU_PROBES,
    check_precision,
    cpu_has_amx_tiles,
    cpu_has_bf16_units,
    default_batch_size,
    default_workers,
    inference_uses_bf16,
    map_in_threads,
    resolve_device,
    uses_bf16,
)
from transmrsr.errors import TransMRSRError
from transmrsr.inference.restore import load_model, restore_volume
from transmrsr.io import Volume

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU = torch.device("cpu")
GPU = torch.device("cuda")


def test_unknown_precisions_and_devices_are_refused():
    assert check_precision("bf16") == "bf16"
    for call in (
        lambda: check_precision("fp16"),
        lambda: uses_bf16("half", CPU),
        lambda: inference_uses_bf16("fp16", CPU),
    ):
        with pytest.raises(TransMRSRError, match="precision"):
            call()
    with pytest.raises(TransMRSRError, match="device"):
        resolve_device("tpu")
    assert resolve_device("cpu") == CPU


@pytest.mark.parametrize(
    ("amx", "avx512_bf16", "units"),
    [(True, False, True), (False, True, True), (True, True, True), (False, False, False)],
)
def test_auto_means_bf16_on_gpus_and_for_restoring_on_cpus_with_amx(
    monkeypatch, amx, avx512_bf16, units
):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    assert cpu_has_bf16_units() is units
    assert cpu_has_amx_tiles() is amx
    # Restoring: bf16 on GPUs and AMX; AVX512-BF16 alone was measured slower than fp32.
    assert inference_uses_bf16("auto", GPU)
    assert inference_uses_bf16("auto", CPU) is amx
    # Training keeps a CPU in fp32 unless asked.
    assert uses_bf16("auto", GPU) and not uses_bf16("auto", CPU)
    for rule in (uses_bf16, inference_uses_bf16):
        for device in (CPU, GPU):
            assert rule("bf16", device) and not rule("fp32", device)


def test_a_torch_without_the_cpu_probes_counts_as_no_bf16_units(monkeypatch):
    for name in BF16_CPU_PROBES:
        monkeypatch.delattr(torch.cpu, name, raising=False)
    assert not cpu_has_bf16_units()
    assert not inference_uses_bf16("auto", CPU)


def test_a_failing_probe_counts_as_no_and_does_not_hide_the_other(monkeypatch):
    def broken() -> bool:
        raise RuntimeError("cpuinfo unavailable")

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", broken, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert not cpu_has_bf16_units()
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert cpu_has_bf16_units()


def test_bf16_restore_matches_fp32_to_bf16_rounding(tiny_model_file):
    hr = phantom((40, 44, 48))
    data, affine = degrade(hr, oriented_affine("LAS"), 2, 4)
    scan = Volume(data=data, affine=affine)
    model = load_model(tiny_model_file)
    exact = restore_volume(scan, model, precision="fp32")
    fast = restore_volume(scan, model, precision="bf16")
    assert (exact.precision, fast.precision) == ("fp32", "bf16")
    np.testing.assert_array_equal(exact.volume.affine, fast.volume.affine)
    diff = np.abs(exact.volume.data - fast.volume.data)
    scale = float(np.abs(exact.volume.data).max())
    # Not the same voxels (bf16 keeps 8 bits of mantissa) ...
    assert diff.max() > 0
    # ... but the same image: errors of a few parts in a thousand of the range.
    assert diff.mean() < 5e-3 * scale
    with pytest.raises(TransMRSRError, match="precision"):
        restore_volume(scan, model, precision="fp16")


def test_restore_cli_takes_a_precision_and_refuses_others(tiny_model_file, tmp_path, capsys):
    import nibabel as nib

    hr = phantom((40, 44, 48))
    data, affine = degrade(hr, oriented_affine("LAS"), 2, 4)
    source = tmp_path / "thick.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), source)
    model = str(tiny_model_file)
    out = tmp_path / "out.nii.gz"
    assert main(["restore", str(source), str(out), "--model", model, "--precision", "fp32"]) == 0
    assert out.exists()
    capsys.readouterr()
    bad = tmp_path / "bad.nii.gz"
    assert main(["restore", str(source), str(bad), "--model", model, "--precision", "fp16"]) == 2
    assert not bad.exists() and "--precision" in capsys.readouterr().err


def test_a_cpu_is_shared_by_two_threads_of_single_planes_and_a_gpu_gets_batches():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        assert default_workers("cpu") == 2
        torch.set_num_threads(1)
        assert default_workers("cpu") == 1
    finally:
        torch.set_num_threads(threads)
    assert default_workers("cuda") == 1
    assert default_batch_size("cpu") == 1 and default_batch_size(torch.device("cuda", 0)) == 8


def test_map_in_threads_keeps_the_order_splits_the_threads_and_restores_them():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(4)

        def work(i: int) -> tuple[int, int, int]:
            time.sleep(0.01 * (i % 3))  # finish out of order
            return i * i, torch.get_num_threads(), threading.get_ident()

        results = list(map_in_threads(work, range(8), 2))
        assert [r[0] for r in results] == [i * i for i in range(8)]
        assert {r[1] for r in results} == {2}
        assert threading.get_ident() not in {r[2] for r in results}
        assert torch.get_num_threads() == 4
        alone = list(map_in_threads(work, range(3), 1))
        assert {r[2] for r in alone} == {threading.get_ident()}
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(TransMRSRError, match="workers must be at least 1"):
        list(map_in_threads(work, range(3), 0))
