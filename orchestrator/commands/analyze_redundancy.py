"""``sna-orch analyze-redundancy [IMAGE...] [--demo] [--group NAME=PATH,...] [--out DIR] [--json] ...``.

The spatial-redundancy analysis of Fig. 1 of Fang et al., "Combating spatial redundancy with
spectral norm attention in convolutional learners", Neurocomputing 511 (2022), on any images,
and the same statistics for the feature maps at a backbone's SNA sites.

Per image (PNG/JPEG/… via Pillow; DICOM via pydicom, MONOCHROME1 inverted): the singular values
of the uncentred image, the explained-variance ratios ``σᵢ²/Σσ²``, the ranks holding 90 % and
99 % of the energy, and the rank-k reconstructions (``--ranks``, default 1,30) with their
relative Frobenius errors. Colour images are analysed on the luminance (BT.601) — that is what
the table shows — and per channel (in the JSON; the figure's colour reconstructions are rebuilt
per channel). ``--demo`` adds four scikit-image photos (natural) and the pydicom-data chest
radiograph (medical).

Fig. 1(e), per group of images: the maximal explained-variance ratio EVR₁ = σ₁²/Σσ² of each
image (luminance, resized to ``--evr-size`` squared, default 224; 0 keeps native sizes) and its
mean ± standard deviation over the first N images, N = 1 … group size
(:mod:`sna_core.analysis.max_evr_curve`). Groups: ``--group NAME=PATH[,PATH...]`` (repeatable;
a NAME given again adds to its group; a directory adds its files in name order), and with
``--demo`` the sets "natural" (15 scikit-image photos) and "medical" (11 pydicom / pydicom-data
CT, MR, CR and NM images; :mod:`sna_core.analysis.images` lists what was kept and why). Group
images are read one at a time and get no (a)–(d) rows; IMAGE arguments are optional when a
group is given.

In-network view (on by default; ``--no-network`` skips it): each image, resized (shorter side)
and centre-cropped to ``--image-size`` with ImageNet normalisation, goes through ``--backbone``
(default resnet18, *untrained*: torchvision's init from ``--seed``, unless ``--checkpoint``);
at every SNA site of ``--placement`` (default stem+blocks) the feature map's per-channel
spectrum (mean over channels) and the spectrum of its channel average (the matrix SNA
decomposes) are measured, and one line of advice says where SNA should help (rule:
:mod:`sna_core.analysis.feature_maps`).

Output: a table on stdout and one line per group, "mean ± sd over N images" (with ``--json``:
the full report as JSON on stdout, the rest on stderr); with ``--out DIR``:
``<image>_redundancy.png/.svg`` per image, ``fig1_redundancy`` (all images as rows, column (e)
beside them when there are groups), ``fig1e_max_evr`` (column (e) alone), ``network_redundancy``
and ``redundancy.json`` (``max_evr``: per group the images, EVR₁ each, and mean/std per N), each
written atomically. Exit 2 on a missing or unreadable image, a bad ``--group`` or ``--ranks`` or
another usage error; nothing is written then.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from typing import TYPE_CHECKING, Any

from orchestrator.errors import UsageError

if TYPE_CHECKING:  # imported when the verb runs (torch): `sna-orch --help` stays fast
    from sna_core.analysis.feature_maps import Network, SiteRedundancy
    from sna_core.analysis.images import ImageSource, LoadedImage
    from sna_core.analysis.max_evr_curve import MaxEvrCurve
    from sna_core.analysis.redundancy import ImageRedundancy

PLACEMENTS = ("stem", "blocks", "stem+blocks")
STEMS = ("imagenet", "cifar")
MIN_IMAGE_SIZE = 32
DEFAULT_EVR_SIZE = 224  # = sna_core.analysis.max_evr_curve.DEFAULT_EVR_SIZE (not imported: keeps --help fast)
MIN_EVR_SIZE = 8
GROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
RESERVED_STEMS = ("fig1", "fig1e", "network")  # the combined figures' names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="image files: PNG, JPEG, … or DICOM")
    parser.add_argument("--demo", action="store_true",
                        help="add scikit-image photos (natural) and the pydicom-data chest radiograph (medical) "
                             "as rows, and the groups 'natural' (15 photos) and 'medical' (11 CT/MR/CR/NM "
                             "DICOM images) for column (e)")
    parser.add_argument("--out", metavar="DIR", help="write figures (PNG + SVG) and redundancy.json here")
    parser.add_argument("--json", action="store_true", help="print the full report as JSON (table to stderr)")
    parser.add_argument("--ranks", default="1,30", metavar="K[,K...]",
                        help="ranks of the reconstructions (default 1,30 as in Fig. 1)")
    groups = parser.add_argument_group(
        "Fig. 1(e): mean maximal EVR over the first N images of each group",
        "EVR₁ = σ₁²/Σσ² per image, on its luminance resized to S×S; mean ± sd over images 1..N in the order given")
    groups.add_argument("--group", action="append", default=[], metavar="NAME=PATH[,PATH...]",
                        help="a named image set, e.g. --group natural=a.png,b.jpg --group medical=scans/ "
                             "(repeatable; the same NAME again adds to that group; a directory adds its "
                             "files sorted by name)")
    groups.add_argument("--evr-size", type=int, default=DEFAULT_EVR_SIZE, metavar="S",
                        help=f"resize every group image to S×S before the SVD, so that sets of mixed sizes "
                             f"compare like with like (default {DEFAULT_EVR_SIZE}; 0: native sizes)")
    network = parser.add_argument_group("in-network view")
    network.add_argument("--no-network", action="store_true", help="skip the feature-map statistics")
    network.add_argument("--backbone", default="resnet18", help="backbone name (default resnet18)")
    network.add_argument("--placement", default="stem+blocks", choices=PLACEMENTS,
                         help="SNA sites to measure (default stem+blocks: both)")
    network.add_argument("--image-size", type=int, default=224, metavar="S", help="network input S×S (default 224)")
    network.add_argument("--attention", default="none",
                         help="attention the network runs with (default none: the vanilla backbone, "
                              "i.e. what SNA would receive at each site; 'sna' for a checkpoint trained with it)")
    network.add_argument("--checkpoint", metavar="PATH",
                         help="model state dict or sna-orch trial checkpoint (default: untrained)")
    network.add_argument("--stem", choices=STEMS, help="stem (default imagenet, or read from --checkpoint)")
    network.add_argument("--seed", type=int, default=0, help="seed of the untrained backbone's init (default 0)")


def _safe_name(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "image"
    candidate, index = base, 2
    while candidate in taken:
        candidate, index = f"{base}_{index}", index + 1
    taken.add(candidate)
    return candidate


def _load_inputs(args: argparse.Namespace) -> list[tuple[LoadedImage, str | None]]:
    from sna_core.analysis.images import demo_images, load_image

    if not args.images and not args.demo and not args.group:
        raise UsageError("give at least one IMAGE, --group NAME=PATH,... or --demo")
    loaded: list[tuple[LoadedImage, str | None]] = []
    for path in args.images:
        try:
            loaded.append((load_image(path), None))
        except (FileNotFoundError, ValueError, ImportError) as error:
            raise UsageError(str(error)) from error
    if args.demo:
        try:
            loaded.extend(demo_images())
        except (FileNotFoundError, ValueError, ImportError) as error:
            raise UsageError(f"--demo: {error}") from error
    taken = set(RESERVED_STEMS)
    for image, _ in loaded:
        image.name = _safe_name(image.name, taken)
    return loaded


def _group_paths(spec: str) -> tuple[str, list[str]]:
    """``NAME=PATH[,PATH...]`` → (NAME, paths); a directory stands for its files, sorted by name."""
    name, sep, listed = spec.partition("=")
    name = name.strip()
    if not sep or not GROUP_NAME.fullmatch(name):
        raise UsageError(f"--group {spec!r}: expected NAME=PATH[,PATH...] with NAME of letters, digits, '_', '.', "
                         "'+' or '-'")
    paths: list[str] = []
    for path in (part.strip() for part in listed.split(",")):
        if not path:
            continue
        if os.path.isdir(path):
            files = sorted(entry.path for entry in os.scandir(path) if entry.is_file() and not entry.name.startswith("."))
            if not files:
                raise UsageError(f"--group {name}: directory {path} has no files")
            paths.extend(files)
        elif os.path.isfile(path):
            paths.append(path)
        else:
            raise UsageError(f"--group {name}: {path}: no such image file or directory")
    if not paths:
        raise UsageError(f"--group {spec!r}: no PATH given")
    return name, paths


def _group_sources(args: argparse.Namespace) -> dict[str, list[ImageSource]]:
    """Column (e)'s groups: the demo's first (with --demo), then --group's, in the order given."""
    from sna_core.analysis.images import ImageSource, demo_groups

    groups: dict[str, list[ImageSource]] = {}
    if args.demo:
        try:
            groups.update(demo_groups())
        except ImportError as error:
            raise UsageError(f"--demo: {error}") from error
    demo_names = set(groups)
    for spec in args.group:
        name, paths = _group_paths(spec)
        if name in demo_names:
            raise UsageError(f"--group {name}: the name is taken by --demo's group; choose another")
        groups.setdefault(name, []).extend(ImageSource.from_path(path) for path in paths)
    return groups


def _measure_groups(groups: dict[str, list[ImageSource]], size: int | None) -> list[MaxEvrCurve]:
    """Each group's curve, reading one image at a time; an unreadable image is a usage error."""
    from sna_core.analysis.max_evr_curve import max_evr_curve

    def read(group: str, source: ImageSource) -> tuple[str, Any]:
        try:
            return source.name, source.load().pixels
        except (FileNotFoundError, ValueError, ImportError) as error:
            raise UsageError(f"group {group!r}: {error}") from error

    curves = []
    for group, sources in groups.items():
        try:
            curves.append(max_evr_curve(group, (read(group, source) for source in sources), size=size))
        except ValueError as error:  # an image that cannot be measured (the message names it)
            raise UsageError(str(error)) from error
    return curves


def max_evr_lines(curves: list[MaxEvrCurve]) -> list[str]:
    """One line per group, and the paper's claim (medical > natural) when both groups are there."""
    lines = []
    for curve in curves:
        on = f"{curve.size}×{curve.size}" if curve.size else "native size"
        lines.append(f"Fig. 1(e) {curve.group}: mean max EVR {curve.final_mean:.3f} ± {curve.final_std:.3f} "
                     f"(sd) over {curve.count} images (luminance, {on})")
    by_group = {curve.group: curve for curve in curves}
    if {"natural", "medical"} <= set(by_group):
        medical, natural = by_group["medical"].final_mean, by_group["natural"].final_mean
        verdict = "holds" if medical > natural else "does NOT hold"
        lines.append(f"paper's claim (medical mean max EVR > natural): {verdict} here, "
                     f"medical {medical:.3f} vs natural {natural:.3f}")
    return lines


def _check_network_args(args: argparse.Namespace) -> None:
    from sna_core.attention import list_attention
    from sna_core.backbones import list_backbones

    if args.backbone not in list_backbones():
        raise UsageError(f"--backbone: unknown backbone {args.backbone!r}; valid: {', '.join(list_backbones())}")
    if args.attention not in list_attention():
        raise UsageError(f"--attention: unknown attention {args.attention!r}; valid: {', '.join(list_attention())}")
    if args.image_size < MIN_IMAGE_SIZE:
        raise UsageError(f"--image-size: must be >= {MIN_IMAGE_SIZE}, got {args.image_size}")
    if args.checkpoint and not os.path.isfile(args.checkpoint):
        raise UsageError(f"--checkpoint: {args.checkpoint}: no such file")


def _build_network(args: argparse.Namespace) -> Network:
    from sna_core.analysis.feature_maps import build_network

    try:
        return build_network(args.backbone, args.placement, attention=args.attention, stem=args.stem,
                             checkpoint=args.checkpoint, seed=args.seed)
    except (FileNotFoundError, ValueError, KeyError) as error:
        raise UsageError(f"--checkpoint: {error}" if args.checkpoint else str(error)) from error


def _format_table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = ["  ".join(str(cell).rjust(width) if i else str(cell).ljust(width) for i, (cell, width) in enumerate(zip(row, widths)))
             for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def image_table(results: list[ImageRedundancy], kinds: list[str | None]) -> str:
    ranks = results[0].luminance.ranks
    header = ["image", "kind", "H×W", "on", "EVR₁", "rank 90%", "rank 99%", *[f"err@{k}" for k in ranks]]
    rows = []
    for result, kind in zip(results, kinds):
        matrix = result.luminance
        rows.append([
            result.name, kind or "-", f"{matrix.shape[0]}×{matrix.shape[1]}",
            "luma" if result.is_colour else "grey", f"{matrix.top1_energy:.3f}",
            str(matrix.rank_for(0.90)), str(matrix.rank_for(0.99)),
            *[f"{matrix.relative_errors[k]:.3f}" for k in ranks],
        ])
    return _format_table(rows, header)


def network_table(sites: list[SiteRedundancy]) -> str:
    header = ["site", "C×H×W", "dead ch", "ch EVR₁", "ch rank 90%", "ch rank 99%", "ρ99", "pooled EVR₁", "pooled rank 99%"]
    rows = [[
        site.site, f"{site.channels}×{site.height}×{site.width}", f"{site.dead_channels:.1f}",
        f"{float(site.channel_evr[0]):.3f}", str(site.rank_for(0.90)), str(site.rank_for(0.99)),
        f"{site.normalised_rank_99:.2f}", f"{site.pooled_top1_energy:.3f}", str(site.rank_for(0.99, pooled=True)),
    ] for site in sites]
    return _format_table(rows, header)


def _kind_summary(results: list[ImageRedundancy], kinds: list[str | None]) -> str | None:
    """For the demo: the 99 %-energy ranks of natural vs medical images side by side."""
    by_kind: dict[str, list[int]] = {}
    for result, kind in zip(results, kinds):
        if kind:
            by_kind.setdefault(kind, []).append(result.luminance.rank_for(0.99))
    if len(by_kind) < 2:
        return None
    parts = [f"{kind} {min(v)}–{max(v)}" if len(v) > 1 else f"{kind} {v[0]}" for kind, v in by_kind.items()]
    return "rank for 99% of the energy: " + " vs ".join(parts) + " (fewer = more redundant; paper Fig. 1: medical < natural)"


def _write_atomic(path: str, data: bytes) -> None:
    """``data`` to ``path`` via a temporary file beside it and ``os.replace``."""
    handle, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                                         dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.chmod(temporary, 0o644)  # mkstemp makes 0600; these files are meant to be read
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def _image_groups(inputs: list[tuple[LoadedImage, str | None]]) -> dict[str, list[int]]:
    """Image indices per kind: the demo's natural and medical images are measured apart (their
    redundancy differs, Fig. 1); images given on the command line form one group, "given"."""
    groups: dict[str, list[int]] = {}
    for index, (_, kind) in enumerate(inputs):
        groups.setdefault(kind or "given", []).append(index)
    return groups


def main(args: argparse.Namespace) -> int:
    from sna_core.analysis.redundancy import ENERGY_LEVELS, analyze_image, parse_ranks

    out = sys.stdout
    try:
        ranks = parse_ranks(args.ranks)
    except ValueError as error:
        raise UsageError(f"--ranks: {error}") from error
    if args.evr_size != 0 and args.evr_size < MIN_EVR_SIZE:
        raise UsageError(f"--evr-size: must be 0 (native sizes) or >= {MIN_EVR_SIZE}, got {args.evr_size}")
    if not args.no_network:
        _check_network_args(args)
    if args.out and os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError(f"--out: {args.out} exists and is not a directory")
    if args.out:
        try:  # figures need matplotlib: fail before the (slow) analysis, not after
            from orchestrator.figures.redundancy import (
                max_evr_figure,
                network_figure,
                redundancy_figure,
                render,
            )
        except ImportError as error:
            raise UsageError(str(error)) from error
    group_sources = _group_sources(args)  # paths checked here, before the slow work
    inputs = _load_inputs(args)
    curves = _measure_groups(group_sources, args.evr_size or None)

    results = [analyze_image(image.pixels, ranks, name=image.name, keep_reconstructions=bool(args.out))
               for image, _ in inputs]
    kinds = [kind for _, kind in inputs]
    report: dict[str, Any] = {
        "paper": "Fang et al., Neurocomputing 511 (2022), Fig. 1",
        "ranks": list(ranks),
        "energy_levels": list(ENERGY_LEVELS),
        "images": [
            {**result.to_dict(), "kind": kind, "source": image.source, "file_info": image.info}
            for result, (image, kind) in zip(results, inputs)
        ],
    }
    if curves:
        report["max_evr"] = {
            "figure": "Fig. 1(e): mean ± sd (population) of EVR₁ = σ₁²/Σσ² over the first N images of each group",
            "preprocessing": ("BT.601 luminance, resized (bilinear, antialiased, whole image) to "
                              f"{args.evr_size}×{args.evr_size}" if args.evr_size else "BT.601 luminance, native size"),
            "groups": {
                curve.group: {**curve.to_dict(), "sources": [source.source for source in group_sources[curve.group]]}
                for curve in curves
            },
        }

    network = None
    views: list[tuple[str, list[int], list[SiteRedundancy], str]] = []  # (group, images, sites, advice)
    if not args.no_network and inputs:
        import torch

        from sna_core.analysis.feature_maps import (
            analyze_feature_maps,
            placement_advice,
            preprocess,
        )

        network = _build_network(args)
        batch = torch.stack([preprocess(image.pixels, args.image_size, network.in_channels) for image, _ in inputs])
        for group, indices in _image_groups(inputs).items():
            sites = analyze_feature_maps(network.model, batch[indices], network.sites,
                                         image_names=[inputs[i][0].name for i in indices], ranks=ranks)
            views.append((group, indices, sites, placement_advice(sites)))
        report["network"] = {
            "backbone": network.backbone, "placement": network.placement, "attention": network.attention,
            "stem": network.stem, "image_size": args.image_size, "weights": network.weights,
            "views": [
                {"group": group, "images": [inputs[i][0].name for i in indices],
                 "sites": [site.to_dict() for site in sites], "advice": advice}
                for group, indices, sites, advice in views
            ],
        }

    files: list[str] = []
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        figures = []  # (file stem, Figure), rendered and written one at a time
        originals = [image.pixels for image, _ in inputs]
        for result, original in zip(results, originals):
            figures.append((f"{result.name}_redundancy", lambda r=result, o=original: redundancy_figure([r], [o])))
        if len(results) > 1 or (results and curves):
            labels = [f"{r.name} ({k})" if k else r.name for r, k in zip(results, kinds)]
            figures.append(("fig1_redundancy",
                            lambda: redundancy_figure(results, originals, labels=labels, curves=curves)))
        if curves:
            figures.append(("fig1e_max_evr", lambda: max_evr_figure(curves)))
        for group, indices, sites, _ in views:
            stem = "network_redundancy" if len(views) == 1 else f"network_redundancy_{group}"
            title = (f"{network.backbone} ({network.weights}), {args.image_size}², "
                     f"{group} images: {len(indices)}")
            figures.append((stem, lambda s=sites, t=title: network_figure(s, title=t)))
        for stem, draw in figures:
            for fmt, data in render(draw()).items():
                path = os.path.join(args.out, f"{stem}.{fmt}")
                _write_atomic(path, data)
                files.append(path)
        json_path = os.path.join(args.out, "redundancy.json")
        files.append(json_path)
        report["files"] = files
        _write_atomic(json_path, json.dumps(report, indent=1).encode("utf-8"))

    table_stream = sys.stderr if args.json else out
    if results:
        print(image_table(results, kinds), file=table_stream)
        summary = _kind_summary(results, kinds)
        if summary:
            print(summary, file=table_stream)
    for line in max_evr_lines(curves):
        print(line, file=table_stream)
    for group, indices, sites, advice in views:
        print(f"\nin-network view ({group} images, mean over {len(indices)}): {network.backbone} "
              f"({network.weights}), attention {network.attention}, placement {network.placement}, "
              f"{args.image_size}×{args.image_size}", file=table_stream)
        print(network_table(sites), file=table_stream)
        print(advice, file=table_stream)
    if files:
        print(f"wrote {len(files)} files to {args.out}", file=table_stream)
    elif not args.json:
        print("(no --out: no figures written)", file=table_stream)
    if args.json:
        json.dump(report, out, indent=1)
        out.write("\n")
    return 0
