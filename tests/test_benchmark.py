"""The benchmark: a tiny-budget run of the whole report, tissue Dice, and its errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import oriented_affine, phantom
from test_synthetic import write_label_maps, write_tables

from transmrsr.cli.main import main
from transmrsr.errors import TransMRSRError
from transmrsr.evaluation import benchmark
from transmrsr.evaluation.benchmark import METHODS, BenchmarkSettings, parse_methods
from transmrsr.evaluation.segmentation import TISSUES, segment_tissues, tissue_dice
from transmrsr.io import Volume
from transmrsr.models.priors import prior_arch_of
from transmrsr.training import config as config_module
from transmrsr.training.checkpoint import load_prior

pytestmark = pytest.mark.usefixtures("one_torch_thread")

METHOD_LIST = "cubic,edsr,gfpgan,transmrsr,transmrsr-nosdt"


def _run(data: Path, out: Path, *extra: str, methods: str = METHOD_LIST) -> int:
    return main(
        [
            "benchmark",
            "--data",
            str(data),
            "--out",
            str(out),
            "--config",
            "tiny",
            "--methods",
            methods,
            "--budget-steps",
            "2",
            "--prior-steps",
            "2",
            "--factors",
            "2",
            "4",
            "--no-mni",
            "--no-progress",
            *extra,
        ]
    )


@pytest.mark.slow
def test_tiny_benchmark_writes_the_whole_report(phantom_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(benchmark, "atropos_available", lambda: False)
    out = tmp_path / "bench"
    assert _run(phantom_data, out) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["training"]["edsr"]["model"].startswith("runs/edsr/model_")
    methods = METHOD_LIST.split(",")
    rows = results["rows"]
    assert len(rows) == 2 * len(methods)  # one test subject x two factors x methods
    assert {r["method"] for r in rows} == set(methods)
    assert all(np.isfinite(r["psnr_paper"]) and np.isfinite(r["psnr_masked"]) for r in rows)
    assert not any(k.startswith("dice_") for r in rows for k in r)
    # Every learned method got the same budget, and the TransMRSR rows share one prior.
    assert {name: cost["steps"] for name, cost in results["training"].items()} == {
        "edsr": 2,
        "gfpgan": 2,
        "transmrsr": 2,
        "transmrsr-nosdt": 2,
    }
    assert (out / "runs" / "prior" / "prior.safetensors").is_file()
    # GFP-GAN's StyleGAN2 prior was trained here as long as the StyleSwin one, on the same
    # subjects, and loaded by its run.
    stylegan2 = out / "runs" / "prior-stylegan2"
    _, prior_config, info = load_prior(stylegan2 / "prior.safetensors")
    assert prior_arch_of(prior_config) == "stylegan2" and info["steps"] == 2
    split = [
        json.loads((out / "runs" / run / "data.json").read_text())["train"]
        for run in ("prior", "prior-stylegan2")
    ]
    assert split[0] == split[1]
    assert json.loads((out / "runs" / "gfpgan" / "config.json").read_text())["arch"] == "gfpgan"
    assert results["priors"]["stylegan2"].endswith("prior-stylegan2/prior.safetensors")
    # Cubic is the interpolation itself: its numbers do not depend on any training.
    cubic = [r for r in rows if r["method"] == "cubic"]
    assert cubic[0]["psnr_paper"] > cubic[1]["psnr_paper"]  # x2 is easier than x4
    report = (out / "report.md").read_text()
    assert report in printed
    for label in ("Cubic", "EDSR", "GFP-GAN", "TransMRSR", "TransMRSR w/o SDT"):
        assert f"| {label} |" in report
    gfpgan_x4 = next(line for line in report.split("## x4")[1].splitlines() if "GFP-GAN" in line)
    assert gfpgan_x4.endswith("| 36.37 / 0.9753 |")  # the paper's number next to ours
    assert "GFP-GAN: a StyleGAN2 prior, trained here for 2 steps" in report
    assert "## x2" in report and "## x4" in report and "## Ablations" in report
    assert "pip install 'transmrsr[seg]'" in report
    for figure in ("psnr_vs_factor.png", *Path(out).glob("fig_*_x4.png")):
        assert (out / Path(figure).name).stat().st_size > 1000
    # Rerunning reuses the trained models and the cached scores (the restore timings are the
    # first run's); a deleted score is restored again and reproduces its numbers.
    before = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*.safetensors")}
    assert len(list((out / "scores").glob("*.npy"))) == len(rows)
    test_name = rows[0]["volume"]
    (out / "scores" / f"{test_name}_x4_edsr.json").unlink()
    assert _run(phantom_data, out) == 0
    again = json.loads((out / "results.json").read_text())
    after = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*.safetensors")}
    assert before == after
    for a, b in zip(rows, again["rows"], strict=True):
        assert a["psnr_paper"] == pytest.approx(b["psnr_paper"], abs=1e-9)
        redone = (a["volume"], a["factor"], a["method"]) == (test_name, 4.0, "edsr")
        assert (a["seconds"] == b["seconds"]) != redone


@pytest.mark.slow
def test_minet_is_scored_on_held_out_guided_heads_only(phantom_data, tmp_path, monkeypatch):
    monkeypatch.setattr(benchmark, "atropos_available", lambda: False)
    labels = write_label_maps(write_tables(tmp_path / "labels"), 3)
    out = tmp_path / "bench"
    extra = ["--synthetic", str(labels), "--synthetic-count", "2", "--synthetic-heads", "2"]
    assert _run(phantom_data, out, *extra, methods="cubic,edsr,minet") == 0
    results = json.loads((out / "results.json").read_text())
    rows = results["rows"]
    heads = {r["volume"] for r in rows if r.get("guided_head")}
    assert heads == {"synth-head-0", "synth-head-1"}
    # MINet: a row per guided head and factor, none on the real volume (it has no guide).
    minet = [r for r in rows if r["method"] == "minet"]
    assert {(r["volume"], r["factor"]) for r in minet} == {(h, f) for h in heads for f in (2, 4)}
    # Every method restores the guided heads too; the unguided ones also the real volume.
    for method in ("cubic", "edsr"):
        scored = {r["volume"] for r in rows if r["method"] == method}
        assert heads < scored and len(scored) == 3
    assert all(np.isfinite(r["psnr_paper"]) for r in rows)
    # The same budget; MINet trained as `train --arch minet --guide-contrast t1` does, on the
    # heads of the label maps the held-out heads are not made from.
    assert {n: c["steps"] for n, c in results["training"].items()} == {"edsr": 2, "minet": 2}
    run = json.loads((out / "runs" / "minet" / "synthetic.json").read_text())
    assert len(run["train"]) == 1 and len(run["val"]) == 2
    assert json.loads((out / "runs" / "minet" / "config.json").read_text())["arch"] == "minet"
    report = (out / "report.md").read_text()
    main_table = report.split("## x4")[1].split("##")[0]
    assert "| MINet | - | - | - | - |  |" in main_table  # no score on the real volume
    guided = report.split("## Guided synthetic heads")[1].split("##")[0]
    assert "scored on these only" in guided
    for label in ("Cubic", "EDSR", "MINet"):
        assert guided.count(f"| {label} |") == 2  # one row per factor
    assert (out / "fig_synth-head-0_x4.png").is_file()


@pytest.mark.parametrize(
    ("methods", "message"),
    [("cubic,minet", "--synthetic LABELS_DIR"), ("cubic,edsr,minet", "--synthetic LABELS_DIR")],
)
def test_minet_without_labels_is_a_one_line_error(phantom_data, tmp_path, capsys, methods, message):
    assert _run(phantom_data, tmp_path / "bench", methods=methods) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_all_leaves_minet_out_without_labels(tmp_path, caplog):
    settings = BenchmarkSettings(methods="all", budget_steps=1)
    assert "minet" not in settings.methods and "edsr" in settings.methods
    assert "MINet left out" in caplog.text
    labels = write_label_maps(write_tables(tmp_path / "labels"), 3)
    with_labels = BenchmarkSettings(budget_steps=1, synthetic=str(labels))
    assert with_labels.methods == tuple(METHODS) and with_labels.guided
    synthetic = benchmark.synthetic_config(with_labels)
    assert synthetic.ratio == 1.0 and synthetic.guide.contrast == "t1" and synthetic.val_heads
    heads = benchmark.guided_heads(dataclasses.replace(with_labels, synthetic_heads=1))
    assert [h.name for h in heads] == ["synth-head-0"]
    assert heads[0].guide.shape == heads[0].volume.shape
    assert not np.array_equal(heads[0].guide.data, heads[0].volume.data)
    with pytest.raises(TransMRSRError, match="cannot keep"):
        benchmark.synthetic_config(dataclasses.replace(with_labels, synthetic_val_maps=3))


def test_methods_and_settings_are_checked():
    assert parse_methods("all") == tuple(METHODS)
    assert parse_methods("EDSR, cubic,edsr") == ("edsr", "cubic")
    with pytest.raises(TransMRSRError, match="unknown method"):
        parse_methods("cubic,bicubic")
    with pytest.raises(TransMRSRError, match="budget"):
        BenchmarkSettings(methods=("cubic", "edsr"))
    assert BenchmarkSettings(methods=("cubic",)).methods == ("cubic",)  # nothing to train
    with pytest.raises(TransMRSRError, match="factors"):
        BenchmarkSettings(factors=(1.0,), budget_steps=1)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--methods", "cubic,magic"], "unknown method"),
        (["--budget-steps", "0"], "must be at least 1"),
        (["--notes-file", "/no/such/notes.md"], "cannot read"),
    ],
)
def test_benchmark_errors_are_one_line(phantom_data, tmp_path, capsys, extra, message):
    code = _run(phantom_data, tmp_path / "bench", *extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and message in err[0], err


def test_tissue_dice_counts_overlaps():
    ref = np.zeros((4, 4, 4), np.int8)
    ref[:2] = 1
    ref[2:] = 3
    pred = ref.copy()
    pred[1] = 2  # half of CSF becomes GM
    scores = tissue_dice(pred, ref)
    assert scores["csf"] == pytest.approx(2 * 16 / (16 + 32))
    assert scores["wm"] == 1.0
    assert scores["gm"] == 0.0
    assert set(scores) == set(TISSUES)


def test_atropos_segments_three_tissues():
    pytest.importorskip("ants")
    rng = np.random.default_rng(0)
    truth = np.zeros((40, 40, 40), np.int8)
    zz, yy, xx = np.mgrid[:40, :40, :40]
    r = np.sqrt((zz - 20) ** 2 + (yy - 20) ** 2 + (xx - 20) ** 2)
    truth[r < 18] = 1
    truth[r < 14] = 2
    truth[r < 8] = 3
    means = np.array([0.0, 30.0, 70.0, 110.0])
    image = means[truth] + rng.normal(0, 6, truth.shape)
    labels = segment_tissues(image, truth > 0)
    scores = tissue_dice(labels, truth)
    assert min(scores.values()) > 0.9, scores
    inverted = segment_tissues(image.max() - image, truth > 0, contrast="T2")
    assert tissue_dice(inverted, truth)["wm"] > 0.9


def test_held_out_volumes_are_cropped_to_the_head_on_the_same_world_grid():
    data = np.zeros((50, 60, 40), np.float32)
    data[10:30, 20:45, 5:35] = phantom((20, 25, 30), seed=3) + 50.0
    affine = oriented_affine("PSR")
    volume = Volume(data=data, affine=affine)
    mask = volume.with_data((data > 0).astype(np.float32))
    cropped = benchmark.crop_to_head(benchmark.HeldOutVolume("v", volume, mask), margin=2)
    assert cropped.volume.shape == (24, 29, 34)
    assert np.array_equal(cropped.volume.data, data[8:32, 18:47, 3:37])
    assert np.array_equal(cropped.mask.data, mask.data[8:32, 18:47, 3:37])
    world = affine @ np.array([8, 18, 3, 1.0])
    assert np.allclose(cropped.volume.affine @ np.array([0, 0, 0, 1.0]), world)
    assert np.allclose(cropped.volume.affine[:3, :3], affine[:3, :3])


def test_summary_counts_each_metric_over_the_volumes_that_have_it():
    from transmrsr.evaluation.report import results_table, summarise

    rows = [
        {
            "factor": 4.0,
            "method": "cubic",
            "psnr_paper": 30.0,
            "ssim_paper": 0.9,
            "psnr_masked": 25.0,
            "ssim_masked": 0.8,
        },
        {
            "factor": 4.0,
            "method": "cubic",
            "psnr_paper": 32.0,
            "ssim_paper": 0.92,
            "psnr_masked": 27.0,
            "ssim_masked": 0.84,
            "dice_csf": 0.8,
            "dice_gm": 0.85,
            "dice_wm": 0.9,
        },
    ]
    entry = summarise(rows)[(4.0, "cubic")]
    assert entry["psnr_paper"] == (31.0, 1.0, 2)
    assert entry["dice_gm"] == (0.85, 0.0, 1)
    line = results_table(summarise(rows), ["cubic"], 4.0, dice=True)[-1]
    assert "| 31.00 ± 1.00 |" in line and "| 0.850 |" in line


def test_cached_scores_are_tied_to_the_presets_training_config(monkeypatch):
    """A score cached under a preset whose training config has since changed (a new package
    version) is not reused."""
    settings = BenchmarkSettings(preset="tiny", budget_steps=2)
    before = benchmark._cache_stamp(settings, segment=False)
    assert before == benchmark._cache_stamp(settings, segment=False)
    tiny = config_module.SR_PRESETS["tiny"]
    changed = dataclasses.replace(tiny, pairs=dataclasses.replace(tiny.pairs, transpose=False))
    monkeypatch.setitem(config_module.SR_PRESETS, "tiny", changed)
    assert benchmark._cache_stamp(settings, segment=False) != before
