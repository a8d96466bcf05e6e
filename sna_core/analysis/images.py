"""Reading an image file (PNG/JPEG/… via PIL, DICOM via pydicom) into a float array for analysis.

Paper: J. Fang et al., "Combating spatial redundancy with spectral norm attention in convolutional
learners", Neurocomputing 511 (2022), Fig. 1 analyses a natural photo and a chest radiograph.

Intensities are scaled to [0, 1] by the format's nominal range (8-bit: /255, 16-bit: /65535,
DICOM: /(2^BitsStored − 1)), not by the image's own min/max, so that the uncentred SVD sees the
image as stored. A DICOM with ``PhotometricInterpretation = MONOCHROME1`` (minimum = white) is
inverted, ``(2^BitsStored − 1) − x``, so that bright means dense in every image, as in
MONOCHROME2. A CT image is first converted to Hounsfield units (the modality LUT: rescale slope
and intercept) and shifted so that air (−1024 HU) is 0, with padding below air clipped to 0: CT
files store HU with different intercepts (0 or −1024), and the uncentred SVD must see the same
zero level in each. A ``PALETTE COLOR`` image (ultrasound) goes through its colour LUT to RGB.
Grey images come back as (H, W), colour ones as (H, W, 3) (alpha dropped).

The demo's images (:func:`demo_images` for Fig. 1 (a)–(d), :func:`demo_groups` for (e)) come
from packages installed with the ``analysis`` extra; nothing is downloaded. For (e):

- natural: every real photograph scikit-image 0.26 ships in its package (:data:`DEMO_NATURAL_SET`,
  15 images). Left out: ``cat`` (the same photo as ``chelsea``), the right view of the stereo
  motorcycle (a twin of the left one), ``horse`` (a binary silhouette), the synthetic ``logo``,
  ``colorwheel``, ``checkerboard``, ``binary_blobs`` and ``shepp_logan_phantom``, the
  microscopy and fundus images ``cell``, ``immunohistochemistry``, ``retina`` and
  ``microaneurysms`` (biomedical, not natural scenes; not radiology either), ``lfw_subset``
  (25×25 face crops), and the sets scikit-image fetches from the network (``brain``, ``cells3d``,
  ``eagle``, ``kidney``, ``lily``, ``skin``, …).
- medical: the real radiology images among the DICOM files of pydicom 3.0 and pydicom-data
  (:data:`DEMO_MEDICAL_SET`, 11 images): computed radiographs ``RG1_UNCR`` (chest PA) and
  ``RG3_UNCR`` (extremity); CT slices ``693_UNCR``, ``CT_small``, ``J2K_pixelrep_mismatch``
  (head) and ``explicit_VR-UN`` (abdomen); MR slices ``MR2_UNCR``, ``MR_small``, ``emri_small``
  (head, first of 10 frames) and ``examples_overlay`` (abdomen); the whole-body scintigram
  ``JPEG2000_UNC`` (NM). One file per acquisition: the same image in other transfer syntaxes or
  lossy versions (``RG1_J2KR``, ``RG1_UNCI``, ``MR_small_RLE``, ``emri_small_big_endian``,
  ``JPEG2000``, ``MR-SIEMENS-DICOM-WithOverlays``, …) is left out. Also left out: ultrasound
  (``US1_UNCR``, ``OBXXXX1A``, ``gdcm-US-ALOKA-16``, ``color-pl``, ``examples_ybr_color``, …:
  screen captures with burned-in text, calipers and colour Doppler, not radiographs/CT/MR
  slices), derived maps and non-images (``eCT_Supplemental`` perfusion map, ``liver`` SEG masks,
  ``rtdose`` grids), synthetic test patterns (``SC_rgb*``/``SC_ybr*`` colour bars, ``mlut_18``,
  ``vlut_04``, ``image_dfl``; ``OT-PAL-8-face`` is a face photo), the 16×16 DICOMDIR
  thumbnails, and files that need decoder plugins pydicom does not bring (``bad_sequence``,
  ``JPGLosslessP14SV1_1s_1f_8b``, the JPEG-LS and lossy-JPEG files).

Each set is sorted by name (case-insensitive), the order in which Fig. 1(e)'s curve adds images.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "DEMO_MEDICAL",
    "DEMO_MEDICAL_SET",
    "DEMO_NATURAL",
    "DEMO_NATURAL_SET",
    "DICOM_SUFFIXES",
    "HOUNSFIELD_AIR",
    "ImageSource",
    "LoadedImage",
    "demo_groups",
    "demo_images",
    "is_dicom",
    "load_image",
    "missing_package_message",
]

DICOM_SUFFIXES = (".dcm", ".dicom")
HOUNSFIELD_AIR = -1024.0  # CT: the zero level of the loaded image


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
    modality = str(getattr(dataset, "Modality", ""))
    info: dict[str, Any] = {"format": "DICOM", "modality": modality, "photometric": photometric,
                            "bits_stored": bits, "frames": frames,
                            "inverted": samples == 1 and photometric == "MONOCHROME1"}
    if photometric == "PALETTE COLOR" and samples == 1:
        rgb = _dicom_function("apply_color_lut")(pixels, dataset)[..., :3]
        return rgb.astype(np.float64) / float(np.iinfo(rgb.dtype).max), info
    full_scale = float(2**bits - 1)
    if modality == "CT" and samples == 1:
        pixels = np.asarray(_dicom_function("apply_modality_lut")(pixels, dataset), dtype=np.float64)
        pixels = pixels - HOUNSFIELD_AIR
        info["zero_level_hu"] = HOUNSFIELD_AIR
    pixels = pixels.astype(np.float64)
    if samples == 1 and photometric == "MONOCHROME1":
        pixels = full_scale - pixels
    return np.clip(pixels / full_scale, 0.0, 1.0), info


def _dicom_function(name: str) -> Callable[..., np.ndarray]:
    """``apply_color_lut`` / ``apply_modality_lut`` from pydicom 3 (``pydicom.pixels``) or 2.x."""
    try:
        from pydicom import pixels as module
    except ImportError:  # pydicom 2.x
        from pydicom.pixel_data_handlers import util as module
    return getattr(module, name)


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


def _demo_packages(medical: str) -> Callable[..., Any]:
    """pydicom-data's file finder, once scikit-image and pydicom are known to import; an
    ImportError naming the missing package otherwise."""
    try:
        import skimage.data  # noqa: F401  (checked here, used by the readers)
    except ImportError as error:
        raise ImportError(missing_package_message("scikit-image", "the demo's natural images")) from error
    try:
        from pydicom.data import get_testdata_file
    except ImportError as error:
        raise ImportError(missing_package_message("pydicom", medical)) from error
    return get_testdata_file


def demo_images() -> list[tuple[LoadedImage, str]]:
    """(image, kind) for the demo: scikit-image photos ("natural") and the pydicom-data chest
    radiograph ("medical"). Raises ImportError naming the optional package that is missing."""
    import skimage.data

    get_testdata_file = _demo_packages("the demo's chest radiograph")
    images = []
    for name in DEMO_NATURAL:
        pixels = np.asarray(getattr(skimage.data, name)(), dtype=np.float64) / 255.0
        images.append((LoadedImage(name, pixels, f"skimage.data.{name}()", {"format": "PNG (scikit-image)"}), "natural"))
    path = get_testdata_file(DEMO_MEDICAL, download=False)  # never fetch from the network
    if path is None:
        raise ImportError(missing_package_message("pydicom-data", f"the demo's chest radiograph {DEMO_MEDICAL}"))
    images.append((load_image(path), "medical"))
    return images


@dataclass(frozen=True)
class ImageSource:
    """An image that is read only when :meth:`load` is called (large sets stay off memory)."""

    name: str
    source: str
    reader: Callable[[], LoadedImage] = field(repr=False, compare=False)

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], name: str | None = None) -> ImageSource:
        path = os.fspath(path)
        stem = name or os.path.splitext(os.path.basename(path))[0]
        return cls(stem, path, lambda: load_image(path, stem))

    def load(self) -> LoadedImage:
        return self.reader()


# Fig. 1(e)'s sets, sorted by name (case-insensitive); see the module docstring for what was left out.
DEMO_NATURAL_SET = ("astronaut", "brick", "camera", "chelsea", "clock", "coffee", "coins", "grass",
                    "gravel", "hubble_deep_field", "moon", "motorcycle_left", "page", "rocket", "text")
DEMO_MEDICAL_SET = ("693_UNCR.dcm", "CT_small.dcm", "emri_small.dcm", "examples_overlay.dcm",
                    "explicit_VR-UN.dcm", "J2K_pixelrep_mismatch.dcm", "JPEG2000_UNC.dcm", "MR2_UNCR.dcm",
                    "MR_small.dcm", "RG1_UNCR.dcm", "RG3_UNCR.dcm")


def _skimage_photo(name: str) -> Callable[[], LoadedImage]:
    import skimage.data

    def read() -> LoadedImage:
        if name == "motorcycle_left":
            pixels, source = skimage.data.stereo_motorcycle()[0], "skimage.data.stereo_motorcycle()[0]"
        else:
            pixels, source = getattr(skimage.data, name)(), f"skimage.data.{name}()"
        return LoadedImage(name, np.asarray(pixels, dtype=np.float64) / 255.0, source,
                           {"format": "8-bit (scikit-image)"})

    return read


def demo_groups() -> dict[str, list[ImageSource]]:
    """Fig. 1(e)'s demo sets: ``{"natural": [...15 photos], "medical": [...11 DICOM slices]}``,
    read when loaded. Raises ImportError naming the package (or the file) that is missing."""
    get_testdata_file = _demo_packages("the demo's medical images")
    natural = [ImageSource(name, f"skimage.data ({name})", _skimage_photo(name)) for name in DEMO_NATURAL_SET]
    medical = []
    for filename in DEMO_MEDICAL_SET:
        path = get_testdata_file(filename, download=False)  # never fetch from the network
        if path is None:
            raise ImportError(missing_package_message("pydicom-data", f"the demo's medical image {filename}"))
        medical.append(ImageSource.from_path(path))
    return {"natural": natural, "medical": medical}
