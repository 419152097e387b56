"""The Python interface, used as a notebook would: images in memory in, nibabel images out.

Each function must do what its command does: the tests write the same input to a file, run the
command on it and compare voxels, affine and header description with what the function returns.
Restores use the tiny random-weight model (or ``adapt=0`` with a shipped one) so the file runs
in well under a minute on two cores.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from conftest import oriented_affine, phantom
from scipy import ndimage

import transmrsr
from transmrsr.api import adapt_config
from transmrsr.cli.main import build_parser, main
from transmrsr.degradation import degrade, simulate_thick
from transmrsr.errors import TransMRSRError
from transmrsr.inference.adapt import DEFAULT_STEPS, AdaptConfig
from transmrsr.inference.consistency import DEFAULT_CONSISTENCY

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FACTOR = 4


def head(shape: tuple[int, int, int], zooms: tuple[float, float, float]) -> np.ndarray:
    """A smooth head-like volume: scalp, skull, CSF, grey and white matter and ventricles,
    with some texture, blurred by about a millimetre (its size in mm does not depend on the
    voxel size, so a thick and a thin version show the same head)."""
    axes = [(np.arange(n) - (n - 1) / 2) * z for n, z in zip(shape, zooms, strict=True)]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    r = np.sqrt((x / 22) ** 2 + (y / 21) ** 2 + (z / 20) ** 2)
    tissue = np.select(
        [r < 0.4, r < 0.72, r < 0.8, r < 0.88, r < 1.0], [100.0, 70.0, 30.0, 10.0, 55.0], 0.0
    )
    tissue += 12.0 * np.sin(x / 3.0) * np.cos(z / 4.0) * (r < 0.72)
    ventricles = ((x / 4) ** 2 + (y / 8) ** 2 + (z / 6) ** 2) < 1.0
    tissue[ventricles] = 25.0
    sigma = [0.8 / s for s in zooms]
    return ndimage.gaussian_filter(tissue, sigma).astype(np.float32)


def oblique_las(zooms: tuple[float, float, float]) -> np.ndarray:
    """An LAS grid tilted by 15 degrees about the left-right axis, float32-exact so that an
    image in memory and the same image written to a NIfTI file have one affine."""
    t = np.deg2rad(15.0)
    rotation = np.array(
        [[-1.0, 0.0, 0.0], [0.0, np.cos(t), -np.sin(t)], [0.0, np.sin(t), np.cos(t)]]
    )
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(zooms)
    affine[:3, 3] = (30.0, -20.5, -18.25)
    return affine.astype(np.float32).astype(np.float64)


def thick_image() -> nib.Nifti1Image:
    """A 48 x 48 x 12 scan, 1 x 1 x 4 mm: thick along its last axis (x4)."""
    zooms = (1.0, 1.0, float(FACTOR))
    return nib.Nifti1Image(head((48, 48, 12), zooms), oblique_las(zooms))


def world(affine: np.ndarray, index) -> np.ndarray:
    return (np.asarray(affine) @ np.array([*index, 1.0]))[:3]


def run_cli(tmp_path, command: str, image: nib.Nifti1Image, *options: str) -> nib.Nifti1Image:
    """Run ``transmrsr COMMAND`` on ``image`` written to a file; the output image."""
    source, out = tmp_path / f"{command}_in.nii.gz", tmp_path / f"{command}_out.nii.gz"
    nib.save(image, source)
    assert main([command, str(source), str(out), *options]) == 0
    return nib.load(out)


def assert_same_image(api: nib.Nifti1Image, cli: nib.Nifti1Image) -> None:
    """Same voxels, grid and description (the file stores its affine in float32)."""
    np.testing.assert_array_equal(np.asanyarray(api.dataobj), np.asanyarray(cli.dataobj))
    np.testing.assert_allclose(api.affine, cli.affine, atol=1e-5)
    assert api.header["descrip"] == cli.header["descrip"]


def test_restore_in_memory_gives_the_isotropic_grid_and_what_the_cli_writes(
    tiny_model_file, tmp_path
):
    img = thick_image()
    out = transmrsr.restore(img, model=tiny_model_file, factor=FACTOR, adapt=0, device="cpu")

    assert isinstance(out, nib.Nifti1Image)
    assert out.shape == (48, 48, 48)
    assert out.get_data_dtype() == np.float32
    data = np.asanyarray(out.dataobj)
    assert data.dtype == np.float32 and np.isfinite(data).all()
    source = np.asanyarray(img.dataobj)
    assert data.min() >= source.min() and data.max() <= source.max()  # the input's range
    # Field of view kept: the first output voxel sits 3/8 of a thick slice before the first
    # thick slice's centre (the first of four thin slices in its slab), the last one after.
    k = (FACTOR - 1) / (2 * FACTOR)
    np.testing.assert_allclose(world(out.affine, (0, 0, 0)), world(img.affine, (0, 0, -k)))
    np.testing.assert_allclose(
        world(out.affine, (47, 47, 47)), world(img.affine, (47, 47, 11 + k)), atol=1e-9
    )
    np.testing.assert_allclose(np.linalg.norm(out.affine[:3, :3], axis=0), 1.0)
    # The same grid as the interpolation baseline, so the two compare voxel for voxel.
    np.testing.assert_allclose(out.affine, transmrsr.upsample(img).affine, atol=1e-12)
    descrip = out.header["descrip"].item().decode()
    assert descrip == f"transmrsr {transmrsr.__version__} restore tiny x4 axis 2"

    cli = run_cli(
        tmp_path,
        "restore",
        img,
        "--model",
        str(tiny_model_file),
        "--factor",
        str(FACTOR),
        "--adapt",
        "0",
        "--device",
        "cpu",
        "--no-progress",
    )
    assert_same_image(out, cli)


def test_restore_a_path_and_an_array_with_adaptation_as_the_cli_does(tiny_model_file, tmp_path):
    """The header's factor and axis, the adaptation and a slice gap (from the JSON sidecar
    beside a file, as the command reads it, or given) pass through alike."""
    img = thick_image()
    path = tmp_path / "scan.nii.gz"
    nib.save(img, path)
    (tmp_path / "scan.json").write_text(json.dumps({"SliceThickness": 3.2}))
    options = {"model": tiny_model_file, "adapt": 2, "device": "cpu"}
    from_path = transmrsr.restore(path, **options)
    data = np.asanyarray(img.dataobj)
    from_array = transmrsr.restore(data, affine=img.affine, slice_thickness=3.2, **options)
    np.testing.assert_array_equal(np.asanyarray(from_path.dataobj), from_array.dataobj)
    assert from_path.header["descrip"].item().decode().endswith("x4 axis 2 thickness 0.8 spacing")

    cli = run_cli(
        tmp_path,
        "restore",
        img,
        *("--model", str(tiny_model_file), "--adapt", "2", "--slice-thickness", "3.2"),
        *("--device", "cpu", "--no-progress"),
    )
    assert_same_image(from_path, cli)


def test_restore_defaults_are_the_commands():
    args = build_parser().parse_args(["restore", "in.nii.gz", "out.nii.gz"])
    assert args.adapt == DEFAULT_STEPS and args.model == "t1" and args.consistency
    assert adapt_config(None) == AdaptConfig(steps=args.adapt)
    assert adapt_config(0) is None and adapt_config(False) is None


def test_load_model_picks_the_shipped_specialist_for_a_factor():
    general = transmrsr.load_model("t1", device="cpu")
    assert [s.source.rsplit("/", 1)[-1] for s in general.specialists] == [
        "t1_x4_compact.safetensors",
        "t1_x6_compact.safetensors",
        "t1_x8_compact.safetensors",
    ]
    x4 = transmrsr.load_model("t1", factor=4, device="cpu")
    assert x4.source.endswith("t1_x4_compact.safetensors")
    assert not x4.network.training
    assert transmrsr.load_model("t1", factor=2.2).source.endswith("t1_compact.safetensors")


def test_the_default_model_restores_with_its_specialist_for_the_factor():
    """``t1`` hands a x4 scan to ``t1_x4`` (a small one: the shipped network pads every plane
    to 256 x 256, about a second a plane on two cores)."""
    zooms = (1.0, 1.0, float(FACTOR))
    small = nib.Nifti1Image(head((12, 12, 4), zooms), oblique_las(zooms))
    out = transmrsr.restore(small, adapt=0, device="cpu")
    assert out.shape == (12, 12, 16)
    assert out.header["descrip"].item().decode().endswith("restore t1_x4_compact x4 axis 2")
    assert np.isfinite(np.asanyarray(out.dataobj)).all()


def test_restore_accepts_a_loaded_model(tiny_model_file):
    """A model loaded once serves many restores, with the same result as its file."""
    img = thick_image()
    loaded = transmrsr.load_model(tiny_model_file, device="cpu")
    by_name = transmrsr.restore(img, model=tiny_model_file, adapt=0, device="cpu")
    by_object = transmrsr.restore(img, model=loaded, adapt=0, device="cpu")
    np.testing.assert_array_equal(np.asanyarray(by_name.dataobj), by_object.dataobj)


@pytest.mark.parametrize(
    ("image", "options", "message"),
    [
        (np.ones((8, 8, 8), np.float32), {}, "needs affine="),
        (np.ones((8, 8), np.float32), {"affine": np.eye(4)}, "2 dimensions"),
        (np.full((8, 8, 8), np.nan, np.float32), {"affine": np.eye(4)}, "NaN or infinite"),
        (np.zeros((8, 8, 8), np.float32), {"affine": np.eye(4)}, "every voxel has the value 0"),
        (np.arange(512.0).reshape(8, 8, 8), {"affine": np.eye(3)}, "not a finite 4x4 matrix"),
        ([[1, 2], [3, 4]], {}, "expected a nibabel image"),
        ("no/such/scan.nii.gz", {}, "no such file"),
    ],
)
def test_bad_images_raise_one_clear_error(image, options, message):
    with pytest.raises(TransMRSRError, match=message):
        transmrsr.restore(image, **options)


def test_bad_options_raise_before_any_model_is_loaded(tiny_model_file):
    img = thick_image()
    cases = [
        ({"affine": np.eye(4)}, "only for numpy arrays"),
        ({"adapt": -1}, "adapt must be"),
        ({"planes": "three"}, "planes must be one of"),
        ({"precision": "fp8"}, "unknown precision"),
        ({"device": "tpu"}, "unknown device"),
        ({"batch_size": 0}, "batch size"),
        ({"destripe": "yes"}, "destripe must be True or False"),
        ({"slice_thickness": "thick"}, "slice thickness must be"),
        ({"model": "t9"}, "no such model file"),
    ]
    for options, message in cases:
        with pytest.raises(TransMRSRError, match=message):
            transmrsr.restore(img, **options)
    with pytest.raises(TransMRSRError, match="out of range"):
        transmrsr.restore(img, model=tiny_model_file, factor=0.5, adapt=0, device="cpu")
    with pytest.raises(TransMRSRError, match="must be a number"):
        transmrsr.restore(img, model=tiny_model_file, factor="four", adapt=0, device="cpu")


def test_degrade_upsample_evaluate_round_trip_as_the_commands_do(tmp_path, capsys):
    zooms = (1.0, 1.0, 1.0)
    hr = nib.Nifti1Image(head((48, 48, 48), zooms), oblique_las(zooms))

    lr = transmrsr.degrade(hr, factor=FACTOR, axis=2)
    assert lr.shape == (48, 48, 12) and lr.get_data_dtype() == np.float32
    np.testing.assert_allclose(np.linalg.norm(lr.affine[:3, :3], axis=0), (1, 1, FACTOR))
    # Each thick slice lies at the centre of the four thin slices it averages.
    np.testing.assert_allclose(world(lr.affine, (0, 0, 0)), world(hr.affine, (0, 0, 1.5)))
    assert_same_image(lr, run_cli(tmp_path, "degrade", hr, "--factor", "4", "--axis", "2"))

    cubic = transmrsr.upsample(lr)  # factor and axis from the header
    linear = transmrsr.upsample(lr, method="linear")
    np.testing.assert_allclose(cubic.affine, hr.affine, atol=1e-6)  # 48 = 12 x 4: the HR grid
    assert_same_image(cubic, run_cli(tmp_path, "upsample", lr, "--method", "cubic"))

    scores = {
        name: transmrsr.evaluate(up, hr, thick_axis=2)
        for name, up in [("cubic", cubic), ("linear", linear)]
    }
    for result in scores.values():
        assert np.isfinite([result["psnr_paper"], result["psnr_masked"]]).all()
        assert 15 < result["psnr_masked"] < 60 and 0 < result["ssim_masked"] <= 1
        assert result["voxels_compared"] == 48**3 and tuple(result["grid_shift"]) == (0, 0, 0)
    assert scores["cubic"]["psnr_masked"] > scores["linear"]["psnr_masked"]
    assert scores["cubic"]["psnr_paper"] > scores["linear"]["psnr_paper"]
    # An image within 1% of the truth scores far above either interpolation.
    exact = transmrsr.evaluate(np.asanyarray(hr.dataobj) * 0.99, hr, affine=hr.affine)
    assert exact["psnr_masked"] > scores["cubic"]["psnr_masked"] + 10

    nib.save(cubic, tmp_path / "cubic.nii.gz")
    nib.save(hr, tmp_path / "hr.nii.gz")
    capsys.readouterr()
    files = [str(tmp_path / "cubic.nii.gz"), str(tmp_path / "hr.nii.gz")]
    assert main(["evaluate", *files, "--thick-axis", "2", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    for key, value in scores["cubic"].items():
        if isinstance(value, float):
            assert printed[key] == pytest.approx(value, rel=1e-6), key
        else:
            assert printed[key] == (list(value) if isinstance(value, tuple) else value), key


def test_the_cli_reports_what_the_interface_raises_in_one_line(tmp_path, capsys):
    source = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.arange(64.0).reshape(8, 8), np.eye(4)), source)
    capsys.readouterr()
    assert main(["upsample", str(source), str(tmp_path / "out.nii.gz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("transmrsr: error: ") and "2 dimensions" in err
    assert len(err.splitlines()) == 1


def test_degrade_and_evaluate_refuse_bad_input():
    img = thick_image()
    with pytest.raises(TransMRSRError, match="out of range"):
        transmrsr.degrade(img, factor=1.0)
    with pytest.raises(TransMRSRError, match="axis"):
        transmrsr.degrade(img, factor=2, axis="XY")
    with pytest.raises(TransMRSRError, match="unknown interpolation"):
        transmrsr.upsample(img, method="nearest")
    with pytest.raises(TransMRSRError, match="needs affine="):
        transmrsr.evaluate(np.asanyarray(img.dataobj), img)
    with pytest.raises(TransMRSRError, match="no image is one"):
        transmrsr.evaluate(img, img, affine=img.affine)


def test_the_package_serves_the_interface_lazily():
    assert set(transmrsr.__all__) >= {"restore", "load_model", "degrade", "upsample", "evaluate"}
    assert transmrsr.TransMRSRError is TransMRSRError
    assert transmrsr.restore is transmrsr.api.restore and "restore" in dir(transmrsr)
    with pytest.raises(AttributeError):
        transmrsr.no_such_name  # noqa: B018


def test_consistency_takes_a_method_or_a_switch(tiny_model_file):
    hr = phantom((24, 28, 32), seed=9)
    lr, affine = degrade(hr, oriented_affine("RAS"), 2, 4)
    runs = {
        name: transmrsr.restore(lr, affine=affine, model=tiny_model_file, adapt=0, consistency=c)
        for name, c in (("smooth", "smooth"), ("projection", "projection"), ("off", False))
    }
    data = {name: np.asarray(image.dataobj) for name, image in runs.items()}
    inside = lr > 0.05 * lr.max()
    for name in ("smooth", "projection"):
        # Both reproduce the thick slices far better than the network alone.
        err = np.abs(simulate_thick(data[name], 2, 4.0) - lr)[inside]
        off = np.abs(simulate_thick(data["off"], 2, 4.0) - lr)[inside]
        assert np.median(err) < 0.1 * np.median(off)
    assert not np.allclose(data["smooth"], data["projection"])
    default = transmrsr.restore(lr, affine=affine, model=tiny_model_file, adapt=0)
    np.testing.assert_array_equal(np.asarray(default.dataobj), data[DEFAULT_CONSISTENCY])
    with pytest.raises(TransMRSRError, match="consistency must be"):
        transmrsr.restore(lr, affine=affine, model=tiny_model_file, consistency="exact")
