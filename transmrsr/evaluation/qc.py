"""The QC page of a cohort: one self-contained HTML file that shows every scan, opens offline.

Per scan: three planes through the head of the input (interpolated onto the output grid) and of
the restored output, the factor, the model, the time, the slab-stripe index of the output
against cubic interpolation's, and a warning flag with its reasons (a factor outside the
model's training range, stripes, unusual intensities, or a failed input with its error).

A restore writes one small entry per scan (:func:`save_entry`: JSON with the picture as an
embedded PNG) into a hidden folder beside its outputs as soon as the scan is done, and
rebuilds the page from all entries of the cohort (:func:`write_report`). The page therefore
covers scans restored by earlier runs and by other shards of the same cohort, and a killed run
loses no entry but the scan it was on.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
from scipy import ndimage

from transmrsr._version import __version__
from transmrsr.evaluation.figures import PLANE_NAMES, to_ras
from transmrsr.inference.restore import LoadedModel, untrained_factor
from transmrsr.io import Volume, write_text
from transmrsr.stripes import WARN_RATIO, head_mask, stripe_ratio

log = logging.getLogger(__name__)

#: Folder beside the outputs that holds one entry per scan.
ENTRY_FOLDER = ".transmrsr-qc"
#: Input intensities below this fraction of the maximum count as negative (MR magnitude
#: images are not; a phase or a subtraction image is).
NEGATIVE_FRACTION = 0.01
#: A maximum this many times the 99.5th percentile of the head means bright outliers (spikes,
#: a fat-saturation failure, a contrast bolus), which set the intensity scale of the restore.
OUTLIER_RATIO = 5.0
#: A head mask smaller than this fraction of the volume: hardly any signal.
MIN_HEAD_FRACTION = 0.02


@dataclass
class Entry:
    """What the page shows of one scan."""

    input: str
    output: str
    status: str  # "restored" or "failed"
    seconds: float | None = None
    factor: float | None = None
    thick_axis: str | None = None
    model: str | None = None
    precision: str | None = None
    input_shape: list[int] | None = None
    output_shape: list[int] | None = None
    stripe_index: float | None = None
    cubic_stripe_index: float | None = None
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    png: str | None = None  # base64

    @property
    def flagged(self) -> bool:
        return self.status != "restored" or bool(self.warnings)


def factor_warning(model: LoadedModel, factor: float) -> str | None:
    """The reason to flag a factor outside the training range of the network that restored it
    (what the restore log warns about), or ``None``."""
    trained = untrained_factor(model.for_factor(factor), factor)
    if trained is None:
        return None
    lo, hi = trained
    return f"factor x{factor:.3g} outside the model's training range x{lo:g}-x{hi:g}"


def stripe_warning(ours: float | None, cubic: float | None) -> str | None:
    """The reason to flag slab stripes (the index above ``WARN_RATIO`` times cubic's)."""
    if ours is None or cubic is None:
        return None
    ratio = stripe_ratio(ours, cubic)
    if ratio <= WARN_RATIO:
        return None
    return f"slab-stripe index {ratio:.2f} times cubic's: look for stripes in sagittal/coronal"


def intensity_warnings(data: np.ndarray) -> list[str]:
    """Reasons to look twice at an input's intensities: negative values, bright outliers, or
    hardly any signal. The restore still runs; a reader should check the result."""
    found = []
    high = float(data.max())
    low = float(data.min())
    if high > 0 and low < -NEGATIVE_FRACTION * high:
        found.append(f"negative intensities (down to {low:.4g}; not a magnitude image?)")
    mask = head_mask(data)
    fraction = float(mask.mean())
    if fraction < MIN_HEAD_FRACTION:
        found.append(f"hardly any signal ({100 * fraction:.1f}% of the volume)")
    elif high > 0:
        typical = float(np.percentile(data[mask], 99.5))
        if typical > 0 and high > OUTLIER_RATIO * typical:
            found.append(
                f"bright outliers (maximum {high / typical:.1f} times the head's 99.5th percentile)"
            )
    return found


def _planes_of(data: np.ndarray, centre: Sequence[int]) -> list[np.ndarray]:
    """Sagittal, coronal and axial planes of an RAS-ordered array, anterior/superior up."""
    return [np.rot90(np.take(data, int(centre[axis]), axis=axis)) for axis in range(3)]


def _sample_planes(
    source: Volume, target_affine: np.ndarray, ras_shape: Sequence[int], centre: Sequence[int]
) -> list[np.ndarray]:
    """The three planes of the RAS-ordered output grid, sampled from ``source`` with a cubic
    B-spline mirrored at the edges: what ``upsample --method cubic`` gives on those planes
    (the baseline the restoration is read against), without resampling the whole volume."""
    coefficients = ndimage.spline_filter(
        np.asarray(source.data, np.float64), order=3, mode="reflect"
    )
    to_source = np.linalg.solve(source.affine, target_affine)
    planes = []
    for axis in range(3):
        others = [a for a in range(3) if a != axis]
        grid = np.meshgrid(
            np.arange(ras_shape[others[0]]), np.arange(ras_shape[others[1]]), indexing="ij"
        )
        index = np.zeros((4, grid[0].size))
        index[axis] = centre[axis]
        index[others[0]] = grid[0].ravel()
        index[others[1]] = grid[1].ravel()
        index[3] = 1.0
        coords = (to_source @ index)[:3]
        values = ndimage.map_coordinates(
            coefficients, coords, order=3, mode="reflect", prefilter=False
        )
        planes.append(np.rot90(values.reshape(grid[0].shape)))
    return planes


def _ras_affine(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """The affine of ``to_ras(data, affine)``."""
    ornt = nib.orientations.io_orientation(affine)
    return affine @ nib.orientations.inv_ornt_aff(ornt, data.shape)


def scan_picture(source: Volume, restored: Volume, title: str = "") -> bytes:
    """A PNG of three planes through the head centre: the input interpolated onto the output
    grid (top row) and the restored output (bottom row), on one grey scale."""
    ras = to_ras(restored.data, restored.affine)
    ras_affine = _ras_affine(restored.data, restored.affine)
    mask = head_mask(ras)
    centre = (
        [round(c) for c in ndimage.center_of_mass(mask)]
        if mask.any()
        else [s // 2 for s in ras.shape]
    )
    ours = _planes_of(ras, centre)
    theirs = _sample_planes(source, ras_affine, ras.shape, centre)
    values = ras[mask] if mask.any() else ras
    lo, hi = (float(v) for v in np.percentile(values, [0.5, 99.5]))
    hi = hi if hi > lo else lo + 1.0
    spacing = np.sqrt((ras_affine[:3, :3] ** 2).sum(axis=0))
    fig, axes = plt.subplots(2, 3, figsize=(10, 6.6), facecolor="black")
    for column, name in enumerate(PLANE_NAMES):
        others = [a for a in range(3) if a != column]
        aspect = spacing[others[1]] / spacing[others[0]]
        for row, (planes, label) in enumerate(
            ((theirs, "input (interpolated)"), (ours, "restored"))
        ):
            ax = axes[row, column]
            ax.imshow(planes[column], cmap="gray", vmin=lo, vmax=hi, aspect=aspect)
            ax.set_axis_off()
            ax.set_title(f"{label}, {name}", color="white", fontsize=11)
    if title:
        fig.suptitle(title, color="white", fontsize=12)
    fig.subplots_adjust(left=0.005, right=0.995, bottom=0.005, top=0.95, wspace=0.02, hspace=0.1)
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=80, facecolor="black", metadata={"Software": None})
    finally:
        plt.close(fig)
    return buffer.getvalue()


def entry_path(folder: str | os.PathLike[str], output: str | os.PathLike[str]) -> Path:
    """Where the entry of ``output`` is kept: ``FOLDER/.transmrsr-qc/<output name>.json``."""
    return Path(folder) / ENTRY_FOLDER / f"{Path(output).name}.json"


def save_entry(folder: str | os.PathLike[str], entry: Entry) -> Path:
    """Write one scan's entry atomically (an :class:`~transmrsr.errors.OutputError` when it
    cannot be written)."""
    path = entry_path(folder, entry.output)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text(path, json.dumps(asdict(entry)))


def load_entry(path: Path) -> Entry | None:
    """An entry written by :func:`save_entry`; ``None`` (logged) for one that is damaged."""
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
        return Entry(**content)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError) as exc:
        log.warning("%s: QC entry not readable (%s); shown as missing", path, exc)
        return None


def _number(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}g}"


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; background: #fafafa; color: #222; }
h1 { font-size: 1.4em; margin-bottom: 0.2em; }
p.meta { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #eee; }
tr.flag td { background: #fff1e6; }
span.flag { color: #b00; font-weight: bold; }
span.ok { color: #070; font-weight: bold; }
section { background: white; border: 1px solid #ddd; border-radius: 6px; padding: 0.8em 1em;
  margin: 1em 0; }
section.flag { border-color: #d33; border-width: 2px; }
section h2 { font-size: 1.05em; margin: 0 0 0.4em 0; word-break: break-all; }
section img { max-width: 100%; height: auto; display: block; }
ul.warnings { color: #b00; margin: 0.3em 0; }
"""


def _row(index: int, name: str, entry: Entry | None, note: str) -> str:
    if entry is None:
        cells = [f"<a href='#scan{index}'>{html.escape(name)}</a>", note] + ["-"] * 5
        return "<tr class='flag'><td>" + "</td><td>".join(cells) + "</td></tr>"
    flag = (
        "<span class='flag'>&#9888; check</span>" if entry.flagged else "<span class='ok'>ok</span>"
    )
    stripes = f"{_number(entry.stripe_index)} / {_number(entry.cubic_stripe_index)}"
    cells = [
        f"<a href='#scan{index}'>{html.escape(name)}</a>",
        html.escape(entry.status),
        f"x{_number(entry.factor)}" if entry.factor else "-",
        html.escape(entry.model or "-"),
        f"{entry.seconds:.1f} s" if entry.seconds is not None else "-",
        stripes,
        flag,
    ]
    css = " class='flag'" if entry.flagged else ""
    return f"<tr{css}><td>" + "</td><td>".join(cells) + "</td></tr>"


def _section(index: int, name: str, entry: Entry | None, note: str) -> str:
    title = f"<h2>{html.escape(name)}</h2>"
    if entry is None:
        return f"<section id='scan{index}' class='flag'>{title}<p>{html.escape(note)}</p></section>"
    lines = [
        f"input: {html.escape(entry.input)}",
        f"output: {html.escape(entry.output)}",
    ]
    if entry.status == "restored":
        shapes = ""
        if entry.input_shape and entry.output_shape:
            shapes = (
                f", {' x '.join(map(str, entry.input_shape))} -> "
                f"{' x '.join(map(str, entry.output_shape))}"
            )
        lines.append(
            f"x{_number(entry.factor)} along {html.escape(entry.thick_axis or '?')}{shapes}, "
            f"model {html.escape(entry.model or '?')} ({html.escape(entry.precision or '?')}), "
            f"{entry.seconds:.1f} s; slab-stripe index {_number(entry.stripe_index)} "
            f"(cubic {_number(entry.cubic_stripe_index)})"
        )
    reasons = list(entry.warnings)
    if entry.error:
        reasons.insert(0, f"failed: {entry.error}")
    warnings = (
        "<ul class='warnings'>" + "".join(f"<li>{html.escape(w)}</li>" for w in reasons) + "</ul>"
        if reasons
        else ""
    )
    picture = (
        f"<img alt='three planes of {html.escape(name)}' src='data:image/png;base64,{entry.png}'>"
        if entry.png
        else ""
    )
    css = " class='flag'" if entry.flagged else ""
    body = "<br>".join(lines)
    return f"<section id='scan{index}'{css}>{title}<p>{body}</p>{warnings}{picture}</section>"


def render_report(scans: Sequence[tuple[str, Entry | None, str]], *, title: str) -> str:
    """The HTML page: a summary table (one row per scan, flagged rows tinted) and a section per
    scan with its picture. ``scans``: (name, entry or ``None``, what to say without one)."""
    flagged = sum(1 for _, entry, _ in scans if entry is None or entry.flagged)
    rows = "\n".join(_row(i, name, entry, note) for i, (name, entry, note) in enumerate(scans))
    sections = "\n".join(
        _section(i, name, entry, note) for i, (name, entry, note) in enumerate(scans)
    )
    header = (
        "<tr><th>scan</th><th>status</th><th>factor</th><th>model</th><th>time</th>"
        "<th>slab-stripe index (restored / cubic)</th><th>flag</th></tr>"
    )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>\n"
        f"<h1>{html.escape(title)}</h1>\n"
        f"<p class='meta'>transmrsr {__version__}: {len(scans)} scans, {flagged} flagged. "
        "Each picture: the input interpolated onto the output grid (top) and the restored "
        "output (bottom), through the centre of the head, on one grey scale.</p>\n"
        f"<table>{header}\n{rows}</table>\n{sections}\n</body></html>\n"
    )


def write_report(
    folder: str | os.PathLike[str],
    scans: Sequence[tuple[str, Path]],
    *,
    title: str = "transmrsr QC",
    name: str = "report.html",
) -> Path:
    """Build ``FOLDER/report.html`` from the entries of ``scans`` ((input name, output path)
    pairs: the whole cohort, every shard's). A scan without an entry is listed as restored
    without QC when its output exists, else as not restored yet."""
    rows = []
    for label, output in scans:
        path = entry_path(folder, output)
        entry = load_entry(path) if path.is_file() else None
        if entry is None:
            note = (
                "restored earlier without --report: no QC entry"
                if Path(output).exists()
                else "not restored yet (another shard, or a run still to come)"
            )
            rows.append((label, None, note))
        else:
            rows.append((label, entry, ""))
    report = Path(folder) / name
    write_text(report, render_report(rows, title=title))
    log.info("QC page: %s (%d scans)", report, len(rows))
    return report


def entry_for(
    source: Volume,
    restored: Volume,
    *,
    input_name: str,
    output: Path,
    seconds: float,
    factor: float,
    thick_axis: str,
    model: LoadedModel,
    model_source: str,
    precision: str,
    stripe_index: float | None,
    cubic_stripe_index: float | None,
) -> Entry:
    """The entry of a restored scan, with its picture and every warning that applies."""
    warnings = []
    for reason in (factor_warning(model, factor), stripe_warning(stripe_index, cubic_stripe_index)):
        if reason:
            warnings.append(reason)
    warnings.extend(intensity_warnings(source.data))
    png = scan_picture(source, restored)
    return Entry(
        input=input_name,
        output=str(output),
        status="restored",
        seconds=round(seconds, 2),
        factor=float(factor),
        thick_axis=thick_axis,
        model=Path(model_source).name,
        precision=precision,
        input_shape=list(source.shape),
        output_shape=list(restored.shape),
        stripe_index=stripe_index,
        cubic_stripe_index=cubic_stripe_index,
        warnings=warnings,
        png=base64.b64encode(png).decode("ascii"),
    )


def failed_entry(input_name: str, output: Path, error: str, seconds: float) -> Entry:
    """The entry of a scan that could not be restored."""
    return Entry(
        input=input_name,
        output=str(output),
        status="failed",
        seconds=round(seconds, 2),
        error=error,
    )
