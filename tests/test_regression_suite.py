"""benchmarks/regression.py: the suite's cases, its resume, a real case end to end, and the
compare mode that guards every default against the floor of the baselines."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import benchmark_module, oriented_affine, phantom


@pytest.fixture(scope="module")
def reg():
    with benchmark_module("regression") as module:
        yield module


def _results(label: str, cases: dict[str, tuple[float | None, float | None]]) -> dict:
    """A made-up results file: case -> (brain PSNR gain, stripe ratio)."""
    return {
        "meta": {"label": label},
        "cases": {
            case: {"gain_brain_psnr": gain, "stripe_ratio": stripes, "seconds": 1.0}
            for case, (gain, stripes) in cases.items()
        },
    }


def _write(path: Path, payload: dict) -> Path:
    path.write_text(json.dumps(payload))
    return path


def test_the_suite_covers_every_contrast_factor_and_slice_model(reg):
    cases = reg.default_suite()
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), "case ids must be unique: results are keyed by them"
    contrasts = {reg.REFERENCES[c.reference].contrast for c in cases}
    assert {"T1", "T2", "FLAIR", "PD", "T1 template"} <= contrasts
    assert {4.0, 6.0, 8.0} <= {c.factor for c in cases if not reg.REFERENCES[c.reference].thick}
    assert any(c.told for c in cases) and any(not c.told for c in cases)
    assert any(c.thickness < 1 for c in cases), "a slice gap"
    assert any(c.profile == "flat-top" for c in cases)
    assert any(reg.REFERENCES[c.reference].skull for c in cases if c.factor == 4.0)
    assert "stroke_t2_x4_gaussian_not-told" in ids
    assert "mni152_x4_gaussian-0.75_told" in ids
    assert "papaya_pd_real" in ids
    guided = [c for c in cases if c.guide is not None]
    assert {c.factor for c in guided} == {4.0, 8.0}
    assert {reg.REFERENCES[c.reference].contrast for c in guided} >= {"T2", "FLAIR"}
    # a guide of another head, which must be refused (with the fallback: restored unguided)
    assert any(c.fallback and c.guide.startswith("sub-") for c in guided)
    assert "stroke_t2_x4_gaussian_not-told_guide-stroke_t1" in ids


def test_guided_cases_need_a_tree_that_restores_a_guide(reg, tmp_path):
    weights = tmp_path / "transmrsr" / "weights"
    weights.mkdir(parents=True)
    (weights / "t1_x4_compact.safetensors").write_bytes(b"")
    assert not reg.restores_guided(tmp_path)  # the releases before the guide
    (weights / "t1_guided_compact.safetensors").write_bytes(b"")
    assert reg.restores_guided(tmp_path)
    (weights / "t1_guided_compact.safetensors").unlink()
    (tmp_path / "transmrsr" / "inference").mkdir()
    (tmp_path / "transmrsr" / "inference" / "guided.py").write_text("")
    assert reg.restores_guided(tmp_path)
    assert reg.restores_guided(Path(reg.__file__).resolve().parents[1])


def test_a_guided_case_moves_its_guide_in_the_scanner_not_its_voxels(reg, tmp_path):
    from transmrsr.registration import rotation_angle_deg
    from transmrsr.templates import mni152_t1

    guide = reg.moved_guide(reg.REFERENCES["mni152"], tmp_path)
    template = mni152_t1()
    np.testing.assert_array_equal(guide.data, template.data)
    motion = guide.affine @ np.linalg.inv(template.affine)
    assert rotation_angle_deg(motion) == pytest.approx(5.423, abs=0.01)


def test_floor_is_the_best_baseline_and_losses_beyond_tolerance_fail(reg):
    old = _results("old", {"a": (2.24, 0.9), "b": (1.00, 0.8), "c": (0.50, None), "d": (1.0, 1.0)})
    new = _results("new", {"a": (1.86, 0.7), "b": (1.20, 0.8), "c": (0.40, None), "d": (1.1, 1.0)})
    candidate = _results(
        "candidate",
        {
            "a": (2.20, 0.8),  # 0.04 below the old floor: within tolerance
            "b": (1.10, 0.9),  # 0.10 below the new floor: fails
            "c": (0.60, 1.45),  # above the floor, but striped: fails
        },  # "d" not measured: fails
    )
    verdicts = {v.case: v for v in reg.compare(candidate, [old, new])}
    assert verdicts["a"].floor == pytest.approx(2.24) and verdicts["a"].floor_from == "old"
    assert verdicts["a"].change == pytest.approx(-0.04)
    assert not verdicts["a"].failures
    assert verdicts["b"].floor == pytest.approx(1.20) and verdicts["b"].floor_from == "new"
    assert verdicts["b"].failures and "below the floor (new)" in verdicts["b"].failures[0]
    assert verdicts["c"].failures == ("stripes 1.45x cubic's (> 1.3)",)
    assert verdicts["d"].failures == ("not measured",)
    table = reg.compare_table(list(verdicts.values()))
    assert "| a | +2.200 | +2.240 (old) | -0.040 | 0.80 | ok |" in table


def test_a_guided_case_may_not_lose_against_its_unguided_twin(reg):
    assert reg.unguided_twin("flair_x4_gaussian_not-told_guide-stroke_t1") == (
        "flair_x4_gaussian_not-told"
    )
    assert reg.unguided_twin("flair_x4_gaussian_not-told") is None
    run = _results(
        "run",
        {
            "t2_x4": (2.0, 0.8),
            "t2_x4_guide-t1": (4.0, 0.8),  # the guide helps
            "t2_x4_guide-sub": (1.95, 0.8),  # a wrong guide, within 0.1 dB: ok
            "t2_x8": (1.0, 0.8),
            "t2_x8_guide-sub": (0.85, 0.8),  # a wrong guide that costs: fails
        },
    )
    verdicts = {v.case: v for v in reg.compare(run, [])}
    assert not verdicts["t2_x4_guide-t1"].failures
    assert not verdicts["t2_x4_guide-sub"].failures
    assert verdicts["t2_x8_guide-sub"].failures == (
        "-0.150 dB below the same case without its guide",
    )


def test_compare_exit_status_from_the_command_line(reg, tmp_path, capsys):
    base = _write(tmp_path / "base.json", _results("base", {"a": (1.0, 1.0), "b": (2.0, 1.0)}))
    good = _write(tmp_path / "good.json", _results("good", {"a": (0.96, 1.1), "b": (2.3, 1.0)}))
    bad = _write(tmp_path / "bad.json", _results("bad", {"a": (0.94, 1.1), "b": (2.3, 1.0)}))
    assert reg.main(["--compare", str(base), "--results", str(good)]) == 0
    assert "| a | +0.960 | +1.000 (base) | -0.040 |" in capsys.readouterr().out
    assert reg.main(["--compare", str(base), "--results", str(bad)]) == 1
    assert "-0.060 dB below the floor (base)" in capsys.readouterr().out


def test_compare_refuses_a_file_that_is_not_results(reg, tmp_path):
    base = _write(tmp_path / "base.json", _results("base", {"a": (1.0, 1.0)}))
    junk = tmp_path / "junk.json"
    junk.write_text("[1, 2]")
    with pytest.raises(SystemExit, match="not a regression results file"):
        reg.main(["--compare", str(base), "--results", str(junk)])
    with pytest.raises(SystemExit, match="cannot read results"):
        reg.main(["--compare", str(base), "--results", str(tmp_path / "missing.json")])


def _fake_runner(case, tree, work, threads, keep, extra, figures=None):
    """Stands in for a restore: counts its calls in the work folder."""
    calls = Path(work) / "calls.txt"
    with open(calls, "a") as handle:
        handle.write(case.id + "\n")
    gain = case.factor / 10
    return case.id, {
        "gain_brain_psnr": gain,
        "gain_head_psnr": gain,
        "seconds": 0.0,
        "peak_gib": 0.0,
    }


def test_suite_resumes_where_it_stopped(reg, tmp_path):
    cases = [reg.Case("sub-10", 4.0), reg.Case("sub-10", 8.0)]
    first = reg.run_suite(cases[:1], tmp_path, tmp_path, jobs=1, runner=_fake_runner)
    assert list(first) == ["sub-10_x4_gaussian_not-told"]
    both = reg.run_suite(cases, tmp_path, tmp_path, jobs=2, runner=_fake_runner)
    assert list(both) == [c.id for c in cases]
    assert both["sub-10_x8_gaussian_not-told"]["gain_brain_psnr"] == pytest.approx(0.8)
    calls = (tmp_path / "calls.txt").read_text().split()
    assert sorted(calls) == sorted(c.id for c in cases), "the finished case ran once only"
    # a record of another version of the suite is run again
    done = tmp_path / "results" / "sub-10_x4_gaussian_not-told.json"
    record = json.loads(done.read_text())
    done.write_text(json.dumps({**record, "suite_version": -1}))
    reg.run_suite(cases, tmp_path, tmp_path, jobs=1, runner=_fake_runner)
    assert (tmp_path / "calls.txt").read_text().split().count("sub-10_x4_gaussian_not-told") == 2


@pytest.mark.slow
def test_one_case_restored_by_the_command_line_and_scored(
    reg, tmp_path, monkeypatch, tiny_model_file
):
    """A real case end to end: thick input, ``transmrsr restore`` in a subprocess, scores."""
    data = phantom((40, 44, 48)) * 100.0
    path = tmp_path / "head.nii.gz"
    nib.save(nib.Nifti1Image(data.astype(np.float32), oriented_affine("LAS")), path)
    reference = reg.Reference("phantom", str(path), "T1", False, "auto")
    monkeypatch.setitem(reg.REFERENCES, "phantom", reference)
    case = reg.Case("phantom", 4.0, thickness=0.75, told=True)
    extra = ("--model", str(tiny_model_file), "--adapt", "0")
    record = reg.run_case(case, reg.ROOT, tmp_path / "work", 1, False, extra)
    assert record["factor"] == 4.0 and record["contrast"] == "T1"
    for mask in ("brain", "head"):
        cubic = record[mask]["cubic"]["psnr_masked"]
        restored = record[mask]["restored"]["psnr_masked"]
        assert np.isfinite(cubic) and np.isfinite(restored)
        assert record[f"gain_{mask}_psnr"] == pytest.approx(restored - cubic)
    assert record["stripe_ratio"] > 0 and record["seconds"] > 0 and record["peak_gib"] > 0.05
    assert not (tmp_path / "work" / "cases" / case.id).exists(), "volumes removed unless --keep"
    # the thickness was told: the restore's log says it used 3 mm slices (0.75 of 4 mm)
    record = reg.run_case(case, reg.ROOT, tmp_path / "work", 1, True, extra, tmp_path / "figs")
    assert (tmp_path / "figs" / f"{case.id}.png").stat().st_size > 1000
    log = (tmp_path / "work" / "cases" / case.id / "restore.log").read_text()
    assert "3 mm" in log or "0.75" in log


def _failing_runner(case, tree, work, threads, keep, extra, figures=None):
    """Stands in for a restore that fails on x8 cases, as ``_worker`` reports a failure."""
    if case.factor == 8.0:
        return case.id, {"error": "RuntimeError: restore exited 2", "seconds": 0.0}
    return _fake_runner(case, tree, work, threads, keep, extra)


def test_a_failed_case_is_left_to_run_again_and_the_others_are_kept(reg, tmp_path):
    cases = [reg.Case("sub-10", 8.0), reg.Case("sub-10", 4.0)]
    results = reg.run_suite(cases, tmp_path, tmp_path, jobs=1, runner=_failing_runner)
    assert list(results) == ["sub-10_x4_gaussian_not-told"]
    assert not (tmp_path / "results" / "sub-10_x8_gaussian_not-told.json").exists()
    results = reg.run_suite(cases, tmp_path, tmp_path, jobs=1, runner=_fake_runner)
    assert list(results) == [c.id for c in cases]
