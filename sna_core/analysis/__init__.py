"""Spatial-redundancy analysis (paper Fig. 1): spectra of images and of feature maps at SNA sites.

Paper: J. Fang et al., "Combating spatial redundancy with spectral norm attention in convolutional
learners", Neurocomputing 511 (2022), §1 and Fig. 1.

    >>> from sna_core.analysis import analyze_image
    >>> result = analyze_image(image, ranks=(1, 30))
    >>> result.luminance.rank_for(0.99), result.luminance.relative_errors[30]

Pure torch/numpy; :mod:`sna_core.analysis.feature_maps` builds backbones (torchvision) and
:mod:`sna_core.analysis.images` reads files (Pillow; pydicom only for DICOM).
"""

from sna_core.analysis.redundancy import (
    DEFAULT_RANKS,
    ENERGY_LEVELS,
    ImageRedundancy,
    MatrixRedundancy,
    analyze_image,
    analyze_matrix,
    explained_variance_ratio,
    luminance,
    parse_ranks,
    rank_for_energy,
)

__all__ = [
    "DEFAULT_RANKS",
    "ENERGY_LEVELS",
    "ImageRedundancy",
    "MatrixRedundancy",
    "analyze_image",
    "analyze_matrix",
    "explained_variance_ratio",
    "luminance",
    "parse_ranks",
    "rank_for_energy",
]
