"""Smooth random curves: the labels, head motion and lighting of the demo clips all come from these."""

from __future__ import annotations

import numpy as np


def smooth_noise(
    rng: np.random.Generator,
    times: np.ndarray,
    min_period: float,
    max_period: float,
    n_components: int = 4,
) -> np.ndarray:
    """A sum of sinusoids with random periods, phases and weights; roughly in [-1, 1].

    A sum of a few slow sinusoids is smooth by construction and, unlike filtered noise, needs no
    warm-up, so a clip's curve depends only on its own random draws.
    """
    periods = rng.uniform(min_period, max_period, n_components)
    phases = rng.uniform(0.0, 2.0 * np.pi, n_components)
    weights = rng.uniform(0.5, 1.0, n_components)
    waves = np.sin(2.0 * np.pi * times[:, None] / periods[None, :] + phases[None, :])
    return (waves @ weights) / weights.sum()


def stretch_to_range(curve: np.ndarray, low: float, high: float) -> np.ndarray:
    """Affinely map ``curve`` so that its minimum is ``low`` and its maximum is ``high``."""
    span = float(curve.max() - curve.min())
    if span == 0.0:
        return np.full_like(curve, (low + high) / 2.0)
    return low + (curve - curve.min()) * ((high - low) / span)


def spanning_curve(
    rng: np.random.Generator, times: np.ndarray, min_period: float, max_period: float
) -> np.ndarray:
    """A smooth curve in [-1, 1] that visits most of that range (both ends beyond +-0.75)."""
    raw = smooth_noise(rng, times, min_period, max_period)
    low = rng.uniform(-0.98, -0.78)
    high = rng.uniform(0.78, 0.98)
    return stretch_to_range(raw, low, high)
