"""Rigid registration of a guide scan onto a thick-slice scan (transmrsr/registration.py).

Synthetic heads: a label map (scalp, two brain tissues in a folded random pattern, ventricles)
rendered in a T1-like and a T2-like contrast whose tissue order is not monotonic, so that only
a contrast-independent measure sees the same anatomy in both. The real-data test skips when
``../shared/data`` is absent.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813 (the name SimpleITK's own documentation uses)
from conftest import SHARED_MRI, oblique_affine, oriented_affine, shared_file, write_dicom_series
from scipy import ndimage

from transmrsr import registration as reg
from transmrsr.errors import TransMRSRError
from transmrsr.geometry import resample_axis_grid
from transmrsr.io import Volume, load_volume

#: Tissue values (background, scalp, white matter, grey matter, CSF) of the two contrasts:
#: CSF < GM < WM < scalp in T1, and WM < scalp < GM < CSF in T2.
T1 = np.array([0.0, 90.0, 70.0, 45.0, 15.0])
T2 = np.array([0.0, 60.0, 45.0, 80.0, 120.0])
#: 64^3 voxels of 2 mm, centred on the world origin.
GRID = oriented_affine("RAS", (2.0, 2.0, 2.0), origin=(-63.0, -63.0, -63.0))


@pytest.fixture(autouse=True, scope="module")
def one_itk_thread():
    """ITK filters on one thread: the machine's cores are shared, and results must not depend
    on the thread count."""
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    yield
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


def head_labels(seed: int = 0, n: int = 64, zoom: float = 2.0, radii=(46.0, 54.0, 42.0)):
    """Labels 0-4 of a synthetic head (see :data:`T1`) on an ``n``^3 grid of ``zoom`` mm."""
    rng = np.random.default_rng(seed)
    x = (np.arange(n) - (n - 1) / 2) * zoom
    xs = np.meshgrid(x, x, x, indexing="ij")
    r = np.sqrt(sum((g / a) ** 2 for g, a in zip(xs, radii, strict=True)))
    folds = ndimage.gaussian_filter(rng.normal(size=r.shape), 4.0 / zoom)
    folds /= folds.std()
    labels = np.where(r < 1.0, 1, 0)
    brain = r < 0.88
    labels[brain] = np.where(folds[brain] > 0.3, 2, 3)
    for _ in range(3):
        centre = rng.uniform(-0.4, 0.4, 3) * np.asarray(radii)
        size = rng.uniform(5.0, 12.0, 3)
        blob = sum(((g - c) / s) ** 2 for g, c, s in zip(xs, centre, size, strict=True)) < 1
        labels[blob] = 4
    return labels


def render(labels: np.ndarray, contrast: np.ndarray, affine=GRID) -> Volume:
    """The head in one contrast, with a little partial-volume blur."""
    data = ndimage.gaussian_filter(contrast[labels], 0.7)
    return Volume(data.astype(np.float32), np.asarray(affine, np.float64))


def make_thick(volume: Volume, k: int = 4, axis: int = 2) -> Volume:
    """Average groups of ``k`` slices along ``axis``, on the matching (field-of-view
    preserving) grid."""
    n = volume.shape[axis] // k * k
    data = np.take(volume.data, np.arange(n), axis=axis)
    shape = list(data.shape)
    shape[axis : axis + 1] = [n // k, k]
    data = data.reshape(shape).mean(axis=axis + 1)
    grid = resample_axis_grid(volume.shape, volume.affine, axis, k)
    return Volume(data.astype(np.float32), grid.affine)


def moved(volume: Volume, motion: np.ndarray) -> Volume:
    """The same array with its anatomy moved by a world motion (a new affine)."""
    return Volume(volume.data, motion @ volume.affine)


def errors(found: np.ndarray, expected: np.ndarray, centre: np.ndarray) -> tuple[float, float]:
    """Distance (mm) between two rigid motions at ``centre``, and the angle between them."""
    residual = np.linalg.inv(expected) @ found
    point = np.append(centre, 1.0)
    return float(np.linalg.norm((residual @ point - point)[:3])), reg.rotation_angle_deg(residual)


@pytest.fixture(scope="module")
def head():
    """Target (T2-like, thick x4 along SI: 2 x 2 x 8 mm) and guide (T1-like, 2 mm) of one head,
    the guide moved by 5 degrees about LR and 4 mm along RL."""
    labels = head_labels(0)
    target = make_thick(render(labels, T2))
    centre = reg.head_center(target)
    motion = reg.rigid_matrix((5.0, 0.0, 0.0), (4.0, 0.0, 0.0), centre)
    guide = moved(render(labels, T1), motion)
    return target, guide, motion, centre


# ------------------------------------------------------------------------------------------
# Geometry


@pytest.mark.parametrize(
    "affine",
    [
        oriented_affine("RAS", (1.0, 1.0, 5.0)),
        oriented_affine("LAS", (0.9, 0.9, 4.0)),
        oriented_affine("LIA", (1.0, 3.0, 1.0)),
        oriented_affine("PSR", (2.0, 1.0, 1.5)),
        oblique_affine((0.8, 1.0, 4.5)),
    ],
    ids=["RAS", "LAS", "LIA", "PSR", "oblique"],
)
def test_volume_sitk_round_trip_keeps_every_voxel_in_place(affine):
    rng = np.random.default_rng(1)
    volume = Volume(rng.normal(size=(7, 9, 5)).astype(np.float32), affine)
    image = reg.volume_to_sitk(volume)
    assert image.GetSize() == (7, 9, 5)
    # Every voxel's world position, as ITK sees it (LPS), is the affine's (RAS) with x, y
    # negated; the voxel holds the same value.
    index = np.stack(np.meshgrid(*[np.arange(n) for n in volume.shape], indexing="ij"), -1)
    index = index.reshape(-1, 3)
    ras = index @ affine[:3, :3].T + affine[:3, 3]
    itk = np.array([image.TransformIndexToPhysicalPoint([int(v) for v in i]) for i in index])
    np.testing.assert_allclose(itk * [-1, -1, 1], ras, atol=1e-9)
    values = np.array([image.GetPixel([int(v) for v in i]) for i in index[::37]])
    np.testing.assert_array_equal(values, [volume.data[tuple(i)] for i in index[::37]])

    back = reg.sitk_to_volume(image)
    np.testing.assert_array_equal(back.data, volume.data)
    np.testing.assert_allclose(back.affine, affine, atol=1e-12)
    assert back.axcodes == volume.axcodes


def test_sitk_to_volume_refuses_a_vector_image():
    image = sitk.Image([4, 4, 4], sitk.sitkVectorFloat32, 3)
    with pytest.raises(TransMRSRError, match="3-D scalar image"):
        reg.sitk_to_volume(image)


def test_rigid_registration_converts_to_itk_and_back():
    centre = np.array([5.0, -10.0, 20.0])
    matrix = reg.rigid_matrix((4.0, -7.0, 12.0), (3.0, -2.0, 6.0), centre)
    found = reg.RigidRegistration(matrix=matrix, center=centre)
    np.testing.assert_allclose(reg.sitk_transform_matrix(found.to_sitk()), matrix, atol=1e-9)
    np.testing.assert_allclose(found.translation_mm, [3.0, -2.0, 6.0], atol=1e-9)
    assert found.shift_mm == pytest.approx(7.0)
    # Rotations about x, y and z of 4, -7 and 12 degrees compose to one rotation of this angle.
    expected = math.degrees(math.acos((np.trace(matrix[:3, :3]) - 1) / 2))
    assert found.rotation_deg == pytest.approx(expected) and 13.0 < expected < 15.0


# ------------------------------------------------------------------------------------------
# Registration


def test_registration_recovers_a_known_rigid_motion(head):
    target, guide, motion, centre = head
    found = reg.register_rigid(guide, target)
    shift_error, angle_error = errors(found.matrix, motion, centre)
    assert shift_error < 1.0, found.summary()
    assert angle_error < 1.0, found.summary()
    assert found.shift_mm == pytest.approx(4.0, abs=1.0)
    assert found.rotation_deg == pytest.approx(5.0, abs=1.0)
    assert math.isfinite(found.metric) and found.metric < -0.5  # Mattes MI is negative
    assert 10 < found.iterations < 3 * reg.MAX_ITERATIONS
    report = reg.check_guide(guide, target, found)
    assert report.coverage == pytest.approx(1.0)
    assert report.similarity > 0.7 and report.alignment > 2 * reg.MIN_ALIGNMENT
    assert report.rotation_deg == found.rotation_deg and report.shift_mm == found.shift_mm
    assert "covers 100 %" in report.summary()


@pytest.mark.parametrize(
    ("rotation", "translation"),
    [((0.0, 0.0, 5.0), (0.0, 4.0, 0.0)), ((3.0, -3.0, 4.0), (-3.0, 2.0, 2.0))],
)
def test_registration_recovers_motions_about_other_axes(rotation, translation):
    labels = head_labels(0)
    target = make_thick(render(labels, T2), axis=1)  # thick along AP, 2 x 8 x 2 mm
    centre = reg.head_center(target)
    motion = reg.rigid_matrix(rotation, translation, centre)
    found = reg.register_rigid(moved(render(labels, T1), motion), target)
    shift_error, angle_error = errors(found.matrix, motion, centre)
    assert shift_error < 1.0 and angle_error < 1.0, found.summary()


def test_registration_is_reproducible(head):
    target, guide, _, _ = head
    first = reg.register_rigid(guide, target)
    second = reg.register_rigid(guide, target)
    np.testing.assert_array_equal(first.matrix, second.matrix)
    assert first.metric == second.metric and first.iterations == second.iterations


def test_registration_starts_from_the_headers_not_the_centres():
    """A guide whose header places it 40 mm away: the transform found says so (the centres
    are not matched first, which would hide a wrong header), and the check refuses it."""
    labels = head_labels(0)
    target = make_thick(render(labels, T2))
    away = reg.rigid_matrix(translation_mm=(40.0, 0.0, 0.0))
    guide = moved(render(labels, T1), away)
    found = reg.register_rigid(guide, target)
    np.testing.assert_allclose(found.translation_mm, [40.0, 0.0, 0.0], atol=0.5)
    assert found.rotation_deg < 1.0
    with pytest.raises(TransMRSRError, match="moved the guide 40 mm and 0 degrees") as caught:
        reg.check_guide(guide, target, found)
    assert "\n" not in str(caught.value)


def test_a_guide_outside_the_scan_is_refused_in_one_line():
    labels = head_labels(0)
    target = make_thick(render(labels, T2))
    guide = moved(render(labels, T1), reg.rigid_matrix(translation_mm=(0.0, 0.0, 500.0)))
    with pytest.raises(TransMRSRError, match="registration of the guide onto the scan failed") as e:
        reg.register_rigid(guide, target)
    message = str(e.value)
    assert "\n" not in message and "0x" not in message  # no ITK file, line or address
    assert "(all samples map outside moving image buffer)" in message


def test_register_refuses_bad_options(head):
    target, guide, _, _ = head
    with pytest.raises(TransMRSRError, match="not a rigid motion"):
        reg.register_rigid(guide, target, initial=np.diag([2.0, 1.0, 1.0, 1.0]))
    with pytest.raises(TransMRSRError, match="shrink factors"):
        reg.register_rigid(guide, target, levels=(2, 0))
    empty = Volume(np.zeros(target.shape, np.float32), target.affine)
    with pytest.raises(TransMRSRError, match="no head"):
        reg.register_rigid(guide, empty)


# ------------------------------------------------------------------------------------------
# The checks


def test_a_guide_of_half_the_head_is_refused_for_coverage(head):
    target, guide, _, _ = head
    half = Volume(guide.data[:32].copy(), guide.affine)  # the right half of the head only
    with pytest.raises(TransMRSRError, match=r"the guide covers only (4\d|5\d) % of the scan's"):
        reg.check_guide(half, target)
    found = reg.register_rigid(half, target)
    assert reg.coverage(half, found, target) == pytest.approx(0.5, abs=0.05)


def test_a_guide_of_another_head_is_refused():
    target = make_thick(render(head_labels(0), T2))
    for seed, radii in ((1, (46.0, 54.0, 42.0)), (2, (50.0, 50.0, 40.0))):
        other = render(head_labels(seed, radii=radii), T1)
        with pytest.raises(TransMRSRError, match="does not look like the scan's head") as caught:
            reg.check_guide(other, target)
        assert "\n" not in str(caught.value)
        found = reg.register_rigid(other, target)
        similarity, alignment = reg.guide_alignment(other, found, target)
        # The same outline, other folds and ventricles: little edge correlation, and what
        # there is does not depend on the exact pose.
        assert abs(similarity) < 0.15 and alignment < reg.MIN_ALIGNMENT / 2, (similarity, alignment)
        # Without the check it passes: the registration and the coverage raise nothing.
        assert reg.check_guide(other, target, found, same_head=False).alignment == alignment


def test_the_alignment_peaks_where_the_registration_put_the_guide(head):
    target, guide, _, _ = head
    found = reg.register_rigid(guide, target)
    similarity, alignment = reg.guide_alignment(guide, found, target)
    # 2 mm off the pose loses a large share of the similarity; farther loses more.
    assert 0.1 < alignment < similarity
    _, farther = reg.guide_alignment(guide, found, target, shift_mm=4.0)
    assert farther > alignment
    # A registration 3 mm off: the similarity is lower there, and no longer peaks.
    missed = reg._moved_by(found, np.array([3.0, 0.0, 0.0]))
    off_similarity, off_alignment = reg.guide_alignment(guide, missed, target)
    assert off_similarity < similarity - 0.1 and off_alignment < reg.MIN_ALIGNMENT


def test_a_wild_transform_is_refused():
    target = make_thick(render(head_labels(0), T2))
    guide = render(head_labels(0), T1)
    centre = reg.head_center(target)
    for rotation, translation, words in (
        ((0.0, 0.0, 0.0), (35.0, 0.0, 0.0), "35 mm and 0 degrees"),
        ((0.0, 25.0, 0.0), (0.0, 0.0, 0.0), "0 mm and 25 degrees"),
    ):
        wild = reg.RigidRegistration(
            matrix=reg.rigid_matrix(rotation, translation, centre), center=centre, metric=-1.0
        )
        with pytest.raises(TransMRSRError, match=words):
            reg.check_guide(guide, target, wild)
    diverged = reg.RigidRegistration(matrix=np.eye(4), center=centre, metric=float("nan"))
    with pytest.raises(TransMRSRError, match="metric is not finite"):
        reg.check_guide(guide, target, diverged)


# ------------------------------------------------------------------------------------------
# Resampling and saving


def test_resample_guide_follows_the_transform_and_marks_what_it_covers():
    rng = np.random.default_rng(3)
    affine = oriented_affine("LIA", (2.0, 2.0, 2.0))
    guide = Volume(ndimage.gaussian_filter(rng.normal(size=(20, 22, 18)), 1.5), affine)
    # Scan point x shows the guide's anatomy at x + (2, -4, 6) mm: one voxel along each axis
    # of this LIA grid (L: -x, I: -z, A: +y), i.e. array offsets (-1, -3, -2).
    shift = reg.rigid_matrix(translation_mm=(2.0, -4.0, 6.0))
    found = reg.RigidRegistration(matrix=shift, center=np.zeros(3))
    out = reg.resample_guide(guide, found, guide.shape, affine)
    np.testing.assert_allclose(out.volume.affine, affine)
    np.testing.assert_allclose(out.volume.data[1:, 3:, 2:], guide.data[:-1, :-3, :-2], atol=1e-5)
    assert out.covered[1:, 3:, 2:].all()
    assert not out.covered[0].any() and not out.covered[:, :3].any()
    assert not out.covered[:, :, :2].any()
    assert np.all(out.volume.data[~out.covered] == 0.0)


def test_resample_guide_onto_the_thick_grid_interpolates_linearly(head):
    """An unmoved guide on the thick scan's grid: slice centres lie halfway between two guide
    slices, so each value is their mean; the grid extended beyond the guide is not covered."""
    target, guide, _, _ = head
    still = Volume(guide.data, GRID)
    identity = reg.RigidRegistration(matrix=np.eye(4), center=np.zeros(3))
    out = reg.resample_guide(still, identity, target.shape, target.affine)
    expected = 0.5 * (still.data[:, :, 1::4] + still.data[:, :, 2::4])
    np.testing.assert_allclose(out.volume.data, expected, atol=1e-4)
    assert out.covered.all()
    # Two thick slices more at each end: outside the guide, zero and not covered.
    bigger = target.affine.copy()
    bigger[:3, 3] -= 2 * target.affine[:3, 2]
    shape = (*target.shape[:2], target.shape[2] + 4)
    out = reg.resample_guide(still, identity, shape, bigger)
    assert not out.covered[:, :, :2].any() and not out.covered[:, :, -2:].any()
    assert out.covered[:, :, 2:-2].all()
    np.testing.assert_allclose(out.volume.data[:, :, 2:-2], expected, atol=1e-4)
    assert np.all(out.volume.data[:, :, :2] == 0) and np.all(out.volume.data[:, :, -2:] == 0)


def test_save_transform_writes_an_itk_file_that_reads_back(tmp_path, head):
    target, guide, _, _ = head
    found = reg.register_rigid(guide, target)
    path = reg.save_transform(found, tmp_path / "guide_to_scan.tfm")
    assert path == tmp_path / "guide_to_scan.tfm"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["guide_to_scan.tfm"]  # no temp left
    text = path.read_text()
    assert text.startswith("#Insight Transform File") and "VersorRigid3DTransform" in text
    read = sitk.ReadTransform(str(path))
    np.testing.assert_allclose(reg.sitk_transform_matrix(read), found.matrix, atol=1e-9)
    # ITK resampling with the file puts the guide where resample_guide does.
    fixed = reg.volume_to_sitk(target)
    by_file = sitk.Resample(reg.volume_to_sitk(guide), fixed, read, sitk.sitkLinear, 0.0)
    ours = reg.resample_guide(guide, found, target.shape, target.affine)
    np.testing.assert_allclose(
        sitk.GetArrayFromImage(by_file).transpose(2, 1, 0), ours.volume.data, atol=1e-4
    )
    with pytest.raises(TransMRSRError, match=r"\.tfm or \.txt"):
        reg.save_transform(found, tmp_path / "guide.nii.gz")


def test_a_dicom_guide_registers_as_its_nifti(tmp_path, head, write_nifti):
    target, guide, motion, centre = head
    stored = np.rint(guide.data)
    nifti = load_volume(write_nifti(stored.astype(np.int16), guide.affine, "guide.nii.gz"))
    write_dicom_series(tmp_path / "guide_dicom", stored, guide.affine, description="T1 3D")
    dicom = load_volume(tmp_path / "guide_dicom")
    np.testing.assert_array_equal(dicom.data, nifti.data)
    np.testing.assert_allclose(dicom.affine, nifti.affine, atol=1e-4)
    from_nifti = reg.register_rigid(nifti, target)
    from_dicom = reg.register_rigid(dicom, target)
    shift, angle = errors(from_dicom.matrix, from_nifti.matrix, centre)
    assert shift < 0.1 and angle < 0.1
    assert max(errors(from_dicom.matrix, motion, centre)) < 1.0


# ------------------------------------------------------------------------------------------
# Real scans


@pytest.mark.slow
def test_real_same_session_guide_is_registered_and_another_head_refused():
    """stroke_t2 made thick (x4 along SI) as the scan; stroke_t1 of the same patient, moved by
    a known motion, as the guide; a T1 of another subject (ds002748 sub-10) refused."""
    t2 = load_volume(shared_file("stroke_t2.nii.gz"))
    t1 = load_volume(shared_file("stroke_t1.nii.gz"))
    target = make_thick(t2, 4, axis=2)
    assert target.axcodes[2] == "S"
    centre = reg.head_center(target)
    motion = reg.rigid_matrix((3.0, -4.0, 5.0), (4.0, -3.0, 5.0), centre)
    guide = moved(t1, motion)
    report = reg.check_guide(guide, target)
    shift_error, angle_error = errors(report.registration.matrix, motion, centre)
    assert shift_error < 1.0 and angle_error < 1.0, report.summary()
    assert report.coverage > 0.99
    assert report.similarity > 0.6 and report.alignment > 2 * reg.MIN_ALIGNMENT
    assert report.registration.seconds < 30.0

    other = SHARED_MRI.parent / "ds002748" / "sub-10_T1w.nii.gz"
    if not other.exists():
        pytest.skip(f"real data not available: {other}")
    with pytest.raises(TransMRSRError) as caught:
        reg.check_guide(load_volume(other), target)
    message = str(caught.value)
    assert "\n" not in message
    assert any(
        words in message
        for words in ("moved the guide", "covers only", "does not look like", "failed")
    ), message
