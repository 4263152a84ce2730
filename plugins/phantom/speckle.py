"""Random textures: log-compressed speckle and smooth random curves.

Speckle is the envelope of random scatterers seen through the probe's point-spread function:
complex Gaussian noise filtered by an anisotropic Gaussian PSF, whose magnitude is Rayleigh
distributed. It is returned in dB (what a scanner displays after log compression) so that
tissue echogenicity, speckle and attenuation simply add.
"""

from __future__ import annotations

import cv2
import numpy as np

_MIN_SIGMA = 0.3  # below this a Gaussian kernel is the identity


def _blur(field: np.ndarray, sigma_rows: float, sigma_cols: float) -> np.ndarray:
    if sigma_rows < _MIN_SIGMA and sigma_cols < _MIN_SIGMA:
        return field
    return cv2.GaussianBlur(
        field,
        (0, 0),
        sigmaX=max(sigma_cols, _MIN_SIGMA),
        sigmaY=max(sigma_rows, _MIN_SIGMA),
        borderType=cv2.BORDER_REFLECT,
    )


def speckle_db(
    rng: np.random.Generator, shape: tuple[int, int], sigma_rows: float, sigma_cols: float
) -> np.ndarray:
    """float32 speckle in dB, mean 0 (std about 4.5 dB once the nulls are capped), given PSF sigmas
    in samples along depth (rows) and across beams (cols)."""
    re = _blur(rng.standard_normal(shape, dtype=np.float32), sigma_rows, sigma_cols)
    im = _blur(rng.standard_normal(shape, dtype=np.float32), sigma_rows, sigma_cols)
    power: np.ndarray = cv2.add(cv2.multiply(re, re), cv2.multiply(im, im))
    power *= 1.0 / max(float(power.mean()), 1e-12)
    # Scanners soften the deep nulls (dynamic-range compression, display smoothing); without
    # this the nulls draw dark cell walls around every grain.
    np.maximum(power, 0.1, out=power)
    db: np.ndarray = cv2.log(power)
    db *= np.float32(10.0 / np.log(10.0))
    db -= np.float32(db.mean())
    return db


def smooth_noise(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
    """float32 random curve of length n, correlation length ``sigma`` samples, std about 1."""
    pad = int(3 * sigma) + 1
    raw = rng.standard_normal(n + 2 * pad).astype(np.float32)
    if sigma >= _MIN_SIGMA:
        raw = cv2.GaussianBlur(raw[None, :], (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)[0]
    curve = raw[pad : pad + n]
    std = float(curve.std())
    return (curve - curve.mean()) / (std if std > 1e-6 else 1.0)


def smooth_field(
    rng: np.random.Generator, shape: tuple[int, int], sigma_rows: float, sigma_cols: float
) -> np.ndarray:
    """float32 correlated Gaussian field, mean 0 and std about 1."""
    field = _blur(rng.standard_normal(shape, dtype=np.float32), sigma_rows, sigma_cols)
    std = float(field.std())
    return (field - field.mean()) / (std if std > 1e-6 else 1.0)
