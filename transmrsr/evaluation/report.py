"""The benchmark report: Markdown tables (mean +- SD over volumes), figures, and every number
as JSON, written atomically into one folder."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from transmrsr.evaluation.benchmark import (
    ABLATIONS,
    GUIDED,
    METHODS,
    PRIOR_SOURCES,
    BenchmarkResult,
)
from transmrsr.evaluation.figures import save_figure
from transmrsr.evaluation.segmentation import TISSUES
from transmrsr.io import atomic_path

#: SPEC section 7: the paper's IXI T1 test numbers (PSNR dB, SSIM), paper protocol.
PAPER_T1: dict[str, dict[float, tuple[float, float]]] = {
    "edsr": {4.0: (34.14, 0.9574), 8.0: (29.67, 0.9209)},
    "swinir": {4.0: (37.84, 0.9837), 8.0: (30.47, 0.9371)},
    "restormer": {4.0: (37.52, 0.9834), 8.0: (30.35, 0.9436)},
    "gfpgan": {4.0: (36.37, 0.9753), 8.0: (29.50, 0.9108)},
    "transmrsr": {4.0: (38.56, 0.9862), 8.0: (30.85, 0.9451)},
}
#: SPEC section 7: the paper's ablation PSNR at T1 x8.
PAPER_ABLATION_X8: dict[str, float] = {
    "transmrsr": 30.85,
    "transmrsr-noprior": 30.33,
    "transmrsr-nosdt": 30.70,
    "transmrsr-nomref": 14.34,
    "transmrsr-noskip": 30.36,
}
METRICS = ("psnr_paper", "ssim_paper", "psnr_masked", "ssim_masked")


def summarise(rows: Sequence[dict[str, Any]]) -> dict[tuple[float, str], dict[str, Any]]:
    """``(mean, SD, number of volumes)`` of every metric per (factor, method); a metric only
    some volumes have (Dice needs a brain mask) is summarised over those."""
    groups: dict[tuple[float, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((float(row["factor"]), row["method"]), []).append(row)
    summary = {}
    for key, group in groups.items():
        entry: dict[str, Any] = {"n": len(group)}
        for metric in (*METRICS, *(f"dice_{t}" for t in TISSUES)):
            values = [r[metric] for r in group if metric in r and np.isfinite(r[metric])]
            if values:
                entry[metric] = (float(np.mean(values)), float(np.std(values)), len(values))
        summary[key] = entry
    return summary


def _cell(entry: dict[str, Any], metric: str, digits: int) -> str:
    if metric not in entry:
        return "n/a"
    mean, sd, n = entry[metric]
    return f"{mean:.{digits}f} ± {sd:.{digits}f}" if n > 1 else f"{mean:.{digits}f}"


def _paper(method: str, factor: float) -> str:
    ref = PAPER_T1.get(method, {}).get(factor)
    return f"{ref[0]:.2f} / {ref[1]:.4f}" if ref else ""


def results_table(
    summary: dict[tuple[float, str], dict[str, Any]],
    methods: Sequence[str],
    factor: float,
    dice: bool,
) -> list[str]:
    """Markdown lines of one factor's table (Tables 1 and 3 of the paper in one)."""
    head = "| method | paper PSNR | paper SSIM | masked PSNR | masked SSIM |"
    rule = "|---|---|---|---|---|"
    if dice:
        head += " Dice CSF | Dice GM | Dice WM |"
        rule += "---|---|---|"
    head += " paper's IXI PSNR / SSIM |"
    rule += "---|"
    lines = [head, rule]
    for method in methods:
        entry = summary.get((factor, method))
        if entry is None and METHODS[method].guided:  # no guide, no score: its cells are absent
            width = 4 + (len(TISSUES) if dice else 0)
            lines.append("| " + " | ".join([METHODS[method].label, *["-"] * width, ""]) + " |")
            continue
        if entry is None:
            continue
        cells = [
            METHODS[method].label,
            _cell(entry, "psnr_paper", 2),
            _cell(entry, "ssim_paper", 4),
            _cell(entry, "psnr_masked", 2),
            _cell(entry, "ssim_masked", 4),
        ]
        if dice:
            cells += [_cell(entry, f"dice_{t}", 3) for t in TISSUES]
        cells.append(_paper(method, factor))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def factor_curve_figure(summary: dict[tuple[float, str], dict[str, Any]], path: Path) -> Path:
    """PSNR (paper protocol and brain-masked) against the factor, one line per method."""
    methods = list(dict.fromkeys(m for _, m in summary))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric, title in zip(
        axes, ("psnr_paper", "psnr_masked"), ("paper protocol", "brain-masked"), strict=True
    ):
        for method in methods:
            points = sorted(
                (f, e[metric][0]) for (f, m), e in summary.items() if m == method and metric in e
            )
            if points:
                xs, ys = zip(*points, strict=True)
                style = "--" if method in ABLATIONS else "-"
                ax.plot(xs, ys, style, marker="o", label=METHODS[method].label)
        ax.set_xlabel("thick/thin factor")
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def _training_lines(result: BenchmarkResult) -> list[str]:
    lines = [
        "| method | parameters | loss | steps | epochs | wall time | best validation PSNR |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, cost in result.training.items():
        best = cost.get("best_val_psnr", float("nan"))
        cells = [
            METHODS[name].label,
            _count(cost.get("parameters", 0)),
            cost.get("loss", ""),
            str(cost["steps"]),
            str(cost["epochs"]),
            f"{cost['seconds'] / 60:.1f} min",
            f"{best:.2f} dB" if math.isfinite(best) else "n/a",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


#: The methods of each generative prior, as the report names them.
_PRIOR_LABELS = {"styleswin": "StyleSwin", "stylegan2": "StyleGAN2"}


def _prior_lines(result: BenchmarkResult) -> list[str]:
    """One protocol line per generative prior: which rows load it, and where it came from."""
    settings = result.settings
    lines = []
    for arch, path in result.priors.items():
        users = [METHODS[m].label for m in settings.methods if METHODS[m].prior == arch]
        given = getattr(settings, PRIOR_SOURCES[arch][0]) is not None
        source = (
            f"given (`{Path(path).name}`)"
            if given
            else f"trained here for {settings.prior_steps} steps on the training subjects"
        )
        lines.append(
            f"- {', '.join(users)}: a {_PRIOR_LABELS.get(arch, arch)} prior, {source}"
            + ("; shared by these rows." if len(users) > 1 else ".")
        )
    return lines


def _count(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 100_000 else f"{n / 1e3:.1f}k"


def _relative_paths(payload: Any, out: Path) -> Any:
    """``payload`` with paths inside ``out`` made relative to it, so the report folder can be
    moved or committed."""
    if isinstance(payload, dict):
        return {k: _relative_paths(v, out) for k, v in payload.items()}
    if isinstance(payload, list):
        return [_relative_paths(v, out) for v in payload]
    if isinstance(payload, str) and Path(payload).is_absolute():
        path, root = Path(payload), out.resolve()
        return str(path.relative_to(root)) if path.is_relative_to(root) else payload
    return payload


def _minutes(seconds: Iterable[float]) -> str:
    return f"{sum(seconds) / 60:.0f} min"


def _budget(settings: Any) -> str:
    parts = []
    if settings.budget_steps is not None:
        parts.append(f"{settings.budget_steps} steps")
    if settings.budget_minutes is not None:
        parts.append(f"{settings.budget_minutes:g} minutes")
    return " or ".join(parts) or "none"


def write_report(
    result: BenchmarkResult, out: Path, *, title: str = "TransMRSR benchmark", notes: str = ""
) -> Path:
    """``out/report.md``, ``out/results.json`` and ``out/psnr_vs_factor.png``."""
    out.mkdir(parents=True, exist_ok=True)
    real_rows = [r for r in result.rows if not r.get("guided_head")]
    head_rows = [r for r in result.rows if r.get("guided_head")]
    summary = summarise(real_rows)
    settings = result.settings
    curve = factor_curve_figure(summary or summarise(head_rows), out / "psnr_vs_factor.png")
    dice = any(k.startswith("dice_") for row in result.rows for k in row)
    volumes = list(dict.fromkeys(r["volume"] for r in real_rows))
    heads = list(dict.fromkeys(r["volume"] for r in head_rows))
    main_methods = [m for m in settings.methods if m not in ABLATIONS]
    guided = [m for m in GUIDED if m in settings.methods]
    ablations = [m for m in settings.methods if m == "transmrsr" or m in ABLATIONS]
    budget = _budget(settings)
    hw = result.hardware
    lines = [f"# {title}", ""]
    if notes:
        lines += [notes.strip(), ""]
    lines += [
        "## Protocol",
        "",
        f"- Held-out volumes ({len(volumes)}): {', '.join(volumes)}; degraded along "
        f"{settings.thick_axis} by x{', x'.join(f'{f:g}' for f in settings.factors)} (SPEC "
        "degradation: Gaussian slice profile, FWHM = factor), restored onto the isotropic grid "
        f"({settings.planes} plane{'s' if settings.planes == 'both' else ''} per volume).",
        *(
            [
                f"- Guided synthetic heads ({len(heads)}): {', '.join(heads)}; "
                f"{settings.synthetic_contrast} heads with a {settings.guide_contrast} guide "
                "(slightly misregistered), made from label maps that no training used, degraded "
                "and restored alike (the guide registered rigidly onto the thick volume, no "
                "guide branch fitted; unguided methods ignore it). "
                + ", ".join(METHODS[m].label for m in guided)
                + " needs a guide: it is scored on these heads only (`-` on the real volumes)."
            ]
            if heads
            else []
        ),
        "- Paper protocol: 2-D slices through the thick axis, padded to 256, 8-bit scale, mean "
        "over non-empty slices. Masked: PSNR and 3-D SSIM over the brain mask (MNI152: the "
        "template's mask; volumes without one: the automatic foreground).",
        f"- Tissue Dice: {result.dice}"
        + (
            "; 3-class k-means Atropos (CSF, GM, WM) of restored vs reference, inside the brain "
            "mask, only for volumes with a known brain mask."
            if dice
            else "."
        ),
        f"- Training: every learned method through the same stage-2 pipeline, config "
        f"`{settings.preset}`, factors drawn from {settings.factors[0]:g}-"
        f"{settings.factors[-1]:g}, budget {budget} each, seed {settings.seed} (losses in "
        "the training table). Model = best validation epoch (newest when none ended).",
        *_prior_lines(result),
        *(
            [
                f"- {', '.join(METHODS[m].label for m in guided)}: trained on "
                f"{settings.synthetic_count} guided synthetic heads alone (as `transmrsr train "
                f"--synthetic-ratio 1 --guide-contrast {settings.guide_contrast}`), its "
                "checkpoint chosen on a guided validation head; the other methods train on the "
                "subjects."
            ]
            if guided
            else []
        ),
        f"- Hardware: {hw.get('gpu') or hw['processor']}, {hw['cpu_threads']} threads, "
        f"torch {hw['torch']}; training {_minutes(c['seconds'] for c in result.training.values())}"
        f" and restoration {_minutes(r['seconds'] for r in result.rows)} in all (this run "
        f"{result.seconds / 60:.0f} min; finished trainings and scores are reused).",
        "",
    ]
    for factor in settings.factors:
        lines += [f"## x{factor:g}", ""]
        lines += results_table(summary, main_methods, factor, dice)
        lines.append("")
    if heads:
        lines += [
            "## Guided synthetic heads",
            "",
            f"Every method on the {len(heads)} held-out guided synthetic heads "
            f"({', '.join(heads)}); "
            + ", ".join(METHODS[m].label for m in guided)
            + " is scored on these only. Masked metrics over the automatic foreground "
            "(the heads have skull and no brain mask).",
            "",
        ]
        heads_summary = summarise(head_rows)
        for factor in settings.factors:
            lines += [f"x{factor:g}:", ""]
            lines += results_table(heads_summary, list(settings.methods), factor, dice)
            lines.append("")
    if len(ablations) > 1:
        lines += ["## Ablations (TransMRSR)", ""]
        for factor in settings.factors:
            lines += [f"x{factor:g}:", ""]
            lines += results_table(summary, ablations, factor, dice)
            lines.append("")
        lines += [
            "Paper, T1 x8 PSNR: "
            + ", ".join(f"{METHODS[m].label} {v:.2f}" for m, v in PAPER_ABLATION_X8.items()),
            "",
        ]
    if result.training:
        lines += ["## Training cost", "", *_training_lines(result), ""]
    lines += ["## Figures", "", f"![PSNR against factor]({curve.name})", ""]
    for name, fig in result.figures.items():
        lines += [f"![{name}]({Path(fig).name})", ""]
    lines += ["Every number: `results.json`.", ""]
    with atomic_path(out / "results.json", suffix=".json") as tmp, open(tmp, "w") as handle:
        json.dump(_relative_paths(result.to_dict(), out), handle, indent=2, default=float)
    report = out / "report.md"
    with atomic_path(report, suffix=".md") as tmp:
        Path(tmp).write_text("\n".join(lines))
    return report
