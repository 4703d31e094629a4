"""SSIM (scikit-image) between two images, and the diff map as an image.

Images are (H, W, 3) arrays: float in [0, 1] (data_range 1) or uint8 (data_range 255). The range is
always given to scikit-image explicitly: left to infer it from a float image, it would assume the
dtype's full range (-1..1) and report every difference at half its weight.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class SsimResult:
    score: float
    #: per-pixel SSIM, (H, W), mean over channels; 1 where the images agree
    map: np.ndarray


def data_range(image: np.ndarray) -> float:
    if image.dtype == np.uint8:
        return 255.0
    if np.issubdtype(image.dtype, np.floating):
        return 1.0
    raise TypeError(f"SSIM takes uint8 or float images in [0, 1], not {image.dtype}")


def ssim(actual: np.ndarray, expected: np.ndarray) -> SsimResult:
    from skimage.metrics import structural_similarity

    if actual.shape != expected.shape:
        raise ValueError(f"images differ in shape: {actual.shape} vs {expected.shape}")
    if actual.dtype != expected.dtype:
        raise ValueError(f"images differ in dtype: {actual.dtype} vs {expected.dtype}; convert both first")
    rng = data_range(expected)
    work = np.float64 if rng == 1.0 else np.uint8
    score, full = structural_similarity(actual.astype(work), expected.astype(work), data_range=rng,
                                        channel_axis=-1, full=True)
    return SsimResult(float(score), full.mean(axis=-1))


def to_uint8(image: np.ndarray) -> np.ndarray:
    """float [0, 1] -> uint8 the way diffusers' numpy_to_pil rounds, so PNGs match the pipeline's own."""
    if image.dtype == np.uint8:
        return image
    return (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)


def diff_image(result: SsimResult) -> np.ndarray:
    """The SSIM map as a grayscale uint8 image: black where equal, white where SSIM <= 0."""
    return (np.clip(1.0 - result.map, 0.0, 1.0) * 255).round().astype(np.uint8)


def save_png(image: np.ndarray, path: Path) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(to_uint8(image)).save(tmp, format="PNG")
    tmp.replace(path)  # atomic: concurrent xdist workers never leave a half-written image
    return path


def load_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)
