"""Figures of spatial redundancy in the layout of the paper's Fig. 1 (matplotlib, PNG and SVG).

Paper: J. Fang et al., "Combating spatial redundancy with spectral norm attention in convolutional
learners", Neurocomputing 511 (2022), Fig. 1: (a) the image, (b) its rank-1 approximation,
(c) its rank-30 approximation, (d) the cumulative explained-variance ratio of the top 50 singular
values, (e) the mean maximal EVR over the first N images of a set, against N.

One row per image: the original, one panel per requested rank (colour images rebuilt from each
channel's approximation), and the spectrum of the luminance — cumulative energy and the singular
values normalised by σ₁ over the top 50, with the ranks for 90 % and 99 % marked. Given image
groups' curves (:mod:`sna_core.analysis.max_evr_curve`), column (e) is one panel spanning the
rows: per group the running mean of EVR₁ with ± one standard deviation shaded;
:func:`max_evr_figure` draws that panel alone. A second figure
shows the in-network view: the per-channel mean cumulative energy at each SNA site against the
rank normalised by min(H, W).

Uses matplotlib's object API (no pyplot, no global backend switch). :func:`render` encodes a
figure in memory; the command writes the bytes atomically.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from sna_core.analysis.feature_maps import REDUNDANT_RANK_FRACTION, SiteRedundancy
from sna_core.analysis.max_evr_curve import MaxEvrCurve
from sna_core.analysis.redundancy import ImageRedundancy

__all__ = ["FORMATS", "SPECTRUM_TOP", "max_evr_figure", "network_figure", "redundancy_figure", "render"]

FORMATS = ("png", "svg")
SPECTRUM_TOP = 50  # Fig. 1(d) plots the top 50 singular values
DISPLAY_MAX_SIDE = 512  # images are subsampled for display only (keeps the SVG small)
PANEL_INCHES = 2.6
# Column (e): groups named as in the paper get its two colours; others the palette in order.
GROUP_COLOURS = {"natural": "tab:blue", "medical": "tab:red"}
GROUP_PALETTE = ("tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:olive", "tab:cyan", "tab:pink")


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            "drawing the redundancy figures needs the optional package 'matplotlib'; "
            "install it with: pip install matplotlib"
        ) from error
    return Figure


def render(figure: Any) -> dict[str, bytes]:
    """The figure encoded in each of :data:`FORMATS` (the caller writes the files)."""
    encoded = {}
    for fmt in FORMATS:
        buffer = io.BytesIO()
        figure.savefig(buffer, format=fmt, dpi=110, bbox_inches="tight")
        encoded[fmt] = buffer.getvalue()
    return encoded


def _for_display(pixels: np.ndarray) -> np.ndarray:
    step = max(1, int(np.ceil(max(pixels.shape[:2]) / DISPLAY_MAX_SIDE)))
    return np.asarray(pixels)[::step, ::step]


def _show(axis, pixels: np.ndarray, limits: tuple[float, float], title: str) -> None:
    shown = _for_display(pixels)
    if shown.ndim == 3:
        axis.imshow(np.clip(shown, 0.0, 1.0), interpolation="nearest")
    else:
        axis.imshow(shown, cmap="gray", vmin=limits[0], vmax=limits[1], interpolation="nearest")
    axis.set_title(title, fontsize=8)
    axis.set_xticks([])
    axis.set_yticks([])


def _spectrum_panel(axis, result: ImageRedundancy) -> None:
    matrix = result.luminance
    top = min(SPECTRUM_TOP, matrix.singular_values.numel())
    ks = np.arange(1, top + 1)
    cumulative = matrix.cumulative_energy.numpy()[:top]
    sigma = matrix.singular_values.numpy()[:top]
    normalised = sigma / sigma[0] if sigma[0] > 0 else sigma
    axis.plot(ks, cumulative, "o-", markersize=2, linewidth=1, color="tab:blue", label="cumulative EVR")
    axis.plot(ks, normalised, "--", linewidth=1, color="tab:gray", label="σᵢ / σ₁")
    for level, colour in ((0.90, "tab:orange"), (0.99, "tab:red")):
        rank = matrix.rank_for(level)
        if 1 <= rank <= top:
            axis.plot([rank], [cumulative[rank - 1]], "o", color=colour, markersize=5,
                      label=f"{level:.0%} at rank {rank}")
        else:
            axis.plot([], [], "o", color=colour, label=f"{level:.0%} at rank {rank}")
    axis.set_xlim(0, top + 1)
    axis.set_ylim(0, 1.05)
    axis.set_xlabel("singular value index", fontsize=7)
    axis.set_title(f"luminance spectrum (top {top})", fontsize=8)
    axis.tick_params(labelsize=6)
    axis.legend(fontsize=6, loc="center right")
    axis.grid(alpha=0.3)


def redundancy_figure(
    results: Sequence[ImageRedundancy],
    originals: Sequence[np.ndarray],
    *,
    labels: Sequence[str] | None = None,
    curves: Sequence[MaxEvrCurve] = (),
) -> Any:
    """A matplotlib Figure with one Fig. 1 row per result (reconstructions kept), and column (e)
    when ``curves`` are given."""
    if not results or len(results) != len(originals):
        raise ValueError("need one original image per result, and at least one")
    Figure = _figure_class()
    ranks = results[0].luminance.ranks
    columns = 2 + len(ranks)
    extra = 1 if curves else 0  # column (e): one panel spanning every row
    figure = Figure(figsize=(PANEL_INCHES * (columns + 1.4 * extra), PANEL_INCHES * max(len(results), 1.6 if extra else 1)))
    grid = figure.add_gridspec(len(results), columns + extra, width_ratios=[1.0] * columns + [1.4] * extra)
    axes = [[figure.add_subplot(grid[row, column]) for column in range(columns)] for row in range(len(results))]
    if curves:
        _max_evr_panel(figure.add_subplot(grid[:, columns]), curves)
    for row, (result, original) in enumerate(zip(results, originals)):
        label = labels[row] if labels else result.name
        grey = original if original.ndim == 2 else None
        limits = (float(np.percentile(grey, 0.5)), float(np.percentile(grey, 99.5))) if grey is not None else (0.0, 1.0)
        if limits[1] <= limits[0]:
            limits = (limits[0], limits[0] + 1.0)
        height, width = original.shape[:2]
        _show(axes[row][0], original, limits, f"{label}\n{height}×{width}")
        for column, rank in enumerate(ranks, start=1):
            if result.is_colour:  # each channel at rank k; the error over all three channels
                pixels, error, on = result.colour_reconstruction(rank), result.colour_relative_error(rank), " (RGB)"
            else:
                pixels, error, on = result.luminance.reconstructions.get(rank), result.luminance.relative_errors[rank], ""
            if pixels is None:
                raise ValueError(f"{result.name}: no rank-{rank} reconstruction kept")
            _show(axes[row][column], pixels.numpy(), limits, f"rank {rank}{on}: rel. error {error:.3f}")
        _spectrum_panel(axes[row][columns - 1], result)
    figure.tight_layout()
    return figure


def _max_evr_panel(axis, curves: Sequence[MaxEvrCurve]) -> None:
    others = iter(GROUP_PALETTE * (1 + len(curves) // len(GROUP_PALETTE)))
    longest = max(curve.count for curve in curves)
    for curve in curves:
        colour = GROUP_COLOURS.get(curve.group) or next(others)
        n = np.arange(1, curve.count + 1)
        means, stds = curve.means, curve.stds
        axis.plot(n, means, "o-", color=colour, markersize=3, linewidth=1.2,
                  label=f"{curve.group}: {curve.final_mean:.3f} ± {curve.final_std:.3f} (N={curve.count})")
        axis.fill_between(n, means - stds, np.minimum(means + stds, 1.0), color=colour, alpha=0.18, linewidth=0)
    sizes = {curve.size for curve in curves}
    on = f"{sizes.pop()}² luminance" if len(sizes) == 1 and None not in sizes else "luminance"
    axis.set_xlim(0.5, longest + 0.5)
    axis.set_ylim(top=1.0)
    axis.set_xlabel("number of images N (first N, in order)", fontsize=7)
    axis.set_ylabel("mean maximal EVR (σ₁²/Σσ²) ± sd", fontsize=7)
    axis.set_title(f"(e) mean max. EVR over N images, {on}", fontsize=8)
    axis.tick_params(labelsize=6)
    axis.legend(fontsize=6, loc="lower right")
    axis.grid(alpha=0.3)


def max_evr_figure(curves: Sequence[MaxEvrCurve]) -> Any:
    """Column (e) alone: a Figure with the groups' mean max-EVR curves."""
    if not curves:
        raise ValueError("no image groups to draw")
    Figure = _figure_class()
    figure = Figure(figsize=(5.2, 3.8))
    _max_evr_panel(figure.subplots(), curves)
    figure.tight_layout()
    return figure


def network_figure(sites: Sequence[SiteRedundancy], *, title: str) -> Any:
    """A Figure of the per-channel mean cumulative energy at each site vs rank / min(H, W)."""
    if not sites:
        raise ValueError("no sites to draw")
    Figure = _figure_class()
    figure = Figure(figsize=(6.4, 4.2))
    axis = figure.subplots()
    palette = ("tab:red", "tab:blue", "tab:green", "tab:purple", "tab:brown", "tab:olive", "tab:cyan")
    colours: dict[str, str] = {}
    for site in sites:
        first_of_stage = site.stage not in colours
        colour = colours.setdefault(site.stage, palette[len(colours) % len(palette)])
        side = min(site.height, site.width)
        label = f"{site.stage} ({site.channels}×{site.height}×{site.width})" if first_of_stage else None
        axis.plot(np.arange(1, side + 1) / side, np.cumsum(site.channel_evr.numpy()), ".-", color=colour,
                  linewidth=0.9, markersize=2, label=label)
    lowest = min(float(site.channel_evr[0]) for site in sites)
    axis.axhline(0.99, color="black", linewidth=0.6, linestyle=":", label="99% of the energy")
    axis.axvline(REDUNDANT_RANK_FRACTION, color="black", linewidth=0.6, linestyle="--",
                 label=f"redundant if 99% within ρ ≤ {REDUNDANT_RANK_FRACTION:g}")
    axis.set_xlabel("rank / min(H, W)")
    axis.set_ylabel("cumulative EVR (mean over channels)")
    axis.set_xlim(0, 1)
    axis.set_ylim(max(0.0, np.floor(lowest * 10) / 10 - 0.05), 1.01)
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=7, loc="lower right")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    return figure
