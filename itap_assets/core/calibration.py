"""Calibration: every statistic becomes ``-log10 P_baseline(S >= s)``, the tail probability of its value under the
device's own baseline, measured on baseline rows the model did **not** see.

Why out-of-fold, and why contiguous: a model scores the rows it was fitted on better than new rows (more so the
more it can memorise), and on autocorrelated telemetry a row's neighbours are nearly the row itself. So the
baseline is cut into ``folds x blocks_per_fold`` contiguous time blocks, block ``b`` goes to fold ``b % folds``,
and each fold's rows are scored by a model fitted on the other folds: every calibration score comes from a model
that saw neither the row nor the stretch of time around it. (Ten-minute blocks dealt round-robin let each model
see the neighbours of every row it scored: on the Tennessee Eastman baseline that calibration flagged 93 % of the
normal rows that followed.)

* ``TailCalibrator`` (point statistics): empirical below the 98th percentile, a generalized Pareto tail above it
  (``thresholds.fit_gpd_tail``; bounded tails are treated as exponential), so the map is monotone and unbounded
  past the largest baseline value.
* ``GammaCalibrator`` (evidence statistics: means of calibrated scores over a window): a gamma law with the
  baseline's mean and variance of that window mean. A window mean has few independent values in a baseline,
  too few for an empirical tail; its first two moments are well estimated, and the variance carries the
  autocorrelation of the scores it averages. ``-log10 sf`` from scipy's ``gamma.logsf``: monotone, unbounded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

from itap_assets.core.thresholds import fit_gpd_tail

CALIBRATION_TAIL_QUANTILE = 0.98
_KNOTS = 1025
_EPS = 1e-12
_LN10 = math.log(10.0)


def held_out_folds(n: int, folds: int, blocks_per_fold: int) -> list[np.ndarray]:
    """Row indices held out by each fold: ``folds * blocks_per_fold`` contiguous blocks, dealt round-robin."""
    blocks = np.array_split(np.arange(n), folds * blocks_per_fold)
    return [np.concatenate(blocks[f::folds]) for f in range(folds)]


def window_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of each row and the ``window - 1`` rows before it (fewer at the start), per column; time order.
    Each window is summed on its own (not as a difference of running sums), so a row's mean is bit-identical
    whatever came before its window: a day scored with the rows before it as context equals that day scored in
    a longer run."""
    v = np.asarray(values, dtype=np.float64)
    sums = v.copy()
    for lag in range(1, min(window, v.shape[0])):  # the same additions in the same order for every row
        sums[lag:] += v[:-lag]
    count = np.minimum(np.arange(1, v.shape[0] + 1), window).reshape(-1, *([1] * (v.ndim - 1)))
    return sums / count


@dataclass
class TailCalibrator:
    """raw score -> -log10 baseline tail probability (empirical body + POT tail)."""

    knots: np.ndarray  # float64 raw-score quantiles at `probs`
    probs: np.ndarray
    u: float
    xi: float
    sigma: float
    tail_q: float
    method: str

    @staticmethod
    def fit(raw: np.ndarray, tail_q: float = CALIBRATION_TAIL_QUANTILE) -> TailCalibrator:
        r = np.asarray(raw, dtype=np.float64)
        r = r[np.isfinite(r)]
        probs = np.linspace(0.0, tail_q, _KNOTS)
        knots = np.maximum.accumulate(np.quantile(r, probs))
        tail = fit_gpd_tail(r, tail_q)
        sigma, xi, method = tail.sigma, tail.xi, tail.method
        if method == "empirical" or sigma <= 0:
            excess = r[r > tail.u] - tail.u
            sigma = float(excess.mean()) if excess.size else 0.0
            if sigma <= 0:
                sigma = max(float(r.std()), _EPS * max(1.0, abs(tail.u)), _EPS)
            xi, method = 0.0, "exponential"
        return TailCalibrator(knots, probs, float(knots[-1]), float(max(xi, 0.0)), float(sigma), tail_q, method)

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        r = np.asarray(raw, dtype=np.float64)
        # P(S >= s) counts a baseline value equal to s: at a value many baseline rows share (a statistic that is 0
        # on most of them) the share of rows *below* it, so the baseline's most common value scores 0, not
        # -log10 of the share above it (1.7 for a statistic that is 0 on 98 % of the rows)
        values, first, counts = np.unique(self.knots, return_index=True, return_counts=True)
        clipped = np.minimum(r, self.u)
        below = np.interp(clipped, values, self.probs[first + counts - 1])
        at = np.minimum(np.searchsorted(values, clipped), values.size - 1)
        exact = values[at] == clipped
        below = np.where(exact, self.probs[first[at]], below)
        body = np.where(r > self.u, -math.log10(1.0 - self.tail_q), -np.log10(1.0 - below))
        y = np.maximum(r - self.u, 0.0) / self.sigma
        if self.xi < 1e-9:
            extra = y / _LN10
        else:
            extra = np.log1p(self.xi * y) / (self.xi * _LN10)
        return body + extra

    def params(self) -> dict:
        return {"tail_quantile": self.tail_q, "u": self.u, "xi": self.xi, "sigma": self.sigma, "method": self.method,
                "median_raw": float(np.interp(0.5, self.probs, self.knots))}


@dataclass
class GammaCalibrator:
    """window mean of calibrated scores -> -log10 tail probability under a gamma law fitted by moments. Evaluated
    from a table up to a tail probability of 1e-60 (linear interpolation: scipy's incomplete gamma per row cost
    more than the models), and from the asymptotic form of the upper incomplete gamma beyond it."""

    shape: float
    scale: float
    window: int
    _TABLE = 4097

    def __post_init__(self) -> None:
        top = float(stats.gamma.isf(1e-60, self.shape))
        self._y = np.linspace(0.0, top, self._TABLE)
        self._table = -stats.gamma.logsf(self._y, self.shape) / _LN10

    @staticmethod
    def fit(means: np.ndarray, window: int) -> GammaCalibrator:
        m = np.asarray(means, dtype=np.float64)
        m = m[np.isfinite(m)]
        mean = max(float(m.mean()) if m.size else 0.0, 1e-6)
        var = max(float(m.var()) if m.size else 0.0, 1e-6 * mean * mean)
        return GammaCalibrator(mean * mean / var, var / mean, window)

    def __call__(self, means: np.ndarray) -> np.ndarray:
        y = np.maximum(np.asarray(means, dtype=np.float64), 0.0) / self.scale
        out = np.interp(y, self._y, self._table)
        far = y > self._y[-1]
        if far.any():  # log of the upper incomplete gamma ~ (a - 1) log y - y - log Gamma(a)
            yf = y[far]
            out[far] = -((self.shape - 1.0) * np.log(yf) - yf - special.gammaln(self.shape)) / _LN10
        return out

    def params(self) -> dict:
        return {"method": "gamma (moments of the baseline window mean)", "window_rows": self.window,
                "shape": self.shape, "scale": self.scale}

class Identity:
    """Calibrator of a statistic whose raw value already is a -log10 tail probability."""

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        return np.asarray(raw, dtype=np.float64)

    def params(self) -> dict:
        return {"method": "identity"}
