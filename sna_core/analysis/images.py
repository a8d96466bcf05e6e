"""Reading an image file (PNG/JPEG/… via PIL, DICOM via pydicom) into a float array for analysis.

Paper: J. Fang et al., "Combating spatial redundancy with spectral norm attention in convolutional
learners", Neurocomputing 511 (2022), Fig. 1 analyses a natural photo and a chest radiograph.

Intensities are scaled to [0, 1] by the format's nominal range (8-bit: /255, 16-bit: /65535,
DICOM: /(2^BitsStored − 1)), not by the image's own min/max, so that the uncentred SVD sees the
image as stored. A DICOM with ``PhotometricInterpretation = MONOCHROME1`` (minimum = white) is
inverted, ``(2^BitsStored − 1) − x``, so that bright means dense in every image, as in
MONOCHROME2. Grey images come back as (H, W), colour ones as (H, W, 3) (alpha dropped).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "DEMO_MEDICAL",
    "DEMO_NATURAL",
    "DICOM_SUFFIXES",
    "LoadedImage",
    "demo_images",
    "is_dicom",
    "load_image",
    "missing_package_message",
]

DICOM_SUFFIXES = (".dcm", ".dicom")


def missing_package_message(package: str, purpose: str) -> str:
    return f"{purpose} needs the optional package {package!r}; install it with: pip install {package}"


@dataclass
class LoadedImage:
    """An image as a float64 array in [0, 1]: (H, W) grey or (H, W, 3) colour."""

    name: str
    pixels: np.ndarray
    source: str
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def is_colour(self) -> bool:
        return self.pixels.ndim == 3


def is_dicom(path: str) -> bool:
    """By suffix, or by the ``DICM`` marker at byte 128 of a DICOM Part 10 file."""
    if path.lower().endswith(DICOM_SUFFIXES):
        return True
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _load_dicom(path: str) -> tuple[np.ndarray, dict[str, Any]]:
    try:
        import pydicom
    except ImportError as error:
        raise ImportError(missing_package_message("pydicom", f"reading the DICOM file {path}")) from error
    dataset = pydicom.dcmread(path)
    pixels = np.asarray(dataset.pixel_array)
    frames = int(getattr(dataset, "NumberOfFrames", 1) or 1)
    samples = int(getattr(dataset, "SamplesPerPixel", 1) or 1)
    if frames > 1:
        pixels = pixels[0]  # the first frame of a multi-frame file
    photometric = str(getattr(dataset, "PhotometricInterpretation", "MONOCHROME2"))
    bits = int(getattr(dataset, "BitsStored", 8 * pixels.dtype.itemsize))
    full_scale = float(2**bits - 1)
    pixels = pixels.astype(np.float64)
    if samples == 1 and photometric == "MONOCHROME1":
        pixels = full_scale - pixels
    info = {"format": "DICOM", "photometric": photometric, "bits_stored": bits, "frames": frames,
            "inverted": samples == 1 and photometric == "MONOCHROME1"}
    return np.clip(pixels / full_scale, 0.0, 1.0), info


def _load_pil(path: str) -> tuple[np.ndarray, dict[str, Any]]:
    from PIL import Image  # Pillow comes with torchvision

    with Image.open(path) as image:
        image.load()
        mode, image_format = image.mode, image.format
        if mode in ("1", "L", "LA", "La"):
            image = image.convert("L")
        elif not (mode.startswith("I") or mode == "F"):  # palette, alpha, CMYK, YCbCr, ...: as RGB
            image = image.convert("RGB")
        pixels = np.asarray(image)
    if pixels.dtype == np.uint8:
        scale = 255.0
    elif np.issubdtype(pixels.dtype, np.integer):  # 16-bit ("I;16", "I")
        scale = 65535.0 if pixels.max(initial=0) <= 65535 else float(pixels.max())
    else:  # float ("F") images are taken as they are
        scale = 1.0
    return pixels.astype(np.float64) / scale, {"format": image_format, "mode": mode}


def load_image(path: str | os.PathLike[str], name: str | None = None) -> LoadedImage:
    """Read ``path``; raises FileNotFoundError or ValueError naming the path when it cannot."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such image file")
    try:
        pixels, info = _load_dicom(path) if is_dicom(path) else _load_pil(path)
    except ImportError:
        raise
    except Exception as error:
        raise ValueError(f"{path}: cannot read as an image ({type(error).__name__}: {error})") from error
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[-1] != 3) or min(pixels.shape[:2]) < 1:
        raise ValueError(f"{path}: unsupported image shape {pixels.shape}; expected (H, W) or (H, W, 3)")
    stem = os.path.splitext(os.path.basename(path))[0]
    return LoadedImage(name or stem, pixels, path, info)


# Fig. 1's two kinds of image, from data that installed packages ship (nothing is downloaded).
DEMO_NATURAL = ("astronaut", "camera", "coffee", "chelsea")
DEMO_MEDICAL = "RG1_UNCR.dcm"  # pydicom-data: a PA chest radiograph, 1955×1841, MONOCHROME1, 15-bit


def demo_images() -> list[tuple[LoadedImage, str]]:
    """(image, kind) for the demo: scikit-image photos ("natural") and the pydicom-data chest
    radiograph ("medical"). Raises ImportError naming the optional package that is missing."""
    try:
        import skimage.data
    except ImportError as error:
        raise ImportError(missing_package_message("scikit-image", "the demo's natural images")) from error
    try:
        from pydicom.data import get_testdata_file
    except ImportError as error:
        raise ImportError(missing_package_message("pydicom", "the demo's chest radiograph")) from error
    images = []
    for name in DEMO_NATURAL:
        pixels = np.asarray(getattr(skimage.data, name)(), dtype=np.float64) / 255.0
        images.append((LoadedImage(name, pixels, f"skimage.data.{name}()", {"format": "PNG (scikit-image)"}), "natural"))
    path = get_testdata_file(DEMO_MEDICAL, download=False)  # never fetch from the network
    if path is None:
        raise ImportError(missing_package_message("pydicom-data", f"the demo's chest radiograph {DEMO_MEDICAL}"))
    images.append((load_image(path), "medical"))
    return images
