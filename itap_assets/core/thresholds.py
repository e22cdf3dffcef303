"""Label-free alert thresholds from baseline (training) scores, and k-of-n smoothing of threshold crossings.

Nothing here looks at labels: a threshold is a property of the healthy baseline score distribution and a target
false-alarm risk per point.

Peaks over threshold (POT)
--------------------------
Above a high quantile ``u`` of the baseline (``tail_quantile``, default 0.98) the exceedances ``s - u`` are modelled
by a generalized Pareto distribution (GPD, location fixed at 0: ``scipy.stats.genpareto.fit(excess, floc=0)``,
maximum likelihood started from the method-of-moments estimate).
The threshold at per-point risk ``r`` (probability that a baseline point exceeds it) is

    z = u + sigma / xi * ((r / zeta) ** -xi - 1)      (xi != 0)
    z = u - sigma * log(r / zeta)                     (xi == 0)

with ``zeta`` the empirical share of points above ``u``. This extrapolates beyond the largest baseline score, which
an empirical quantile cannot do for risks below ``1 / n``.

Fallbacks (documented, deterministic):

* fewer than ``min_exceedances`` (default 20) points above ``u`` even so (see below), or fewer than
  ``2 * min_exceedances`` finite baseline scores: not enough tail to fit -> empirical quantile ``1 - risk`` (numpy "linear"; for ``risk < 1/n`` this
  is the baseline maximum);
* all exceedances equal (a flat tail), or a fit that returns a non-finite / non-positive scale: exponential tail
  (``xi = 0``) with the maximum-likelihood scale ``sigma = mean(excess)``; if that is also 0 the threshold is ``u``;
* ``risk >= zeta`` (the requested quantile lies inside the body, below ``u``): empirical quantile ``1 - risk``;
* a short baseline with fewer than ``min_exceedances`` points above ``tail_quantile`` (fewer than 1,000 points at
  0.98): the tail starts at the quantile ``1 - min_exceedances / n`` instead (not below 0.8), so a risk far below
  ``1 / n`` is still extrapolated rather than set to the baseline maximum;
* the shape is clipped to ``[-0.5, 1.0]`` (``xi < -0.5`` is a pathological MLE on near-bounded samples, ``xi > 1``
  has no finite mean and extrapolates explosively); the result is never below ``u``.

k-of-n smoothing
----------------
``k_of_n(flags, k, n)``: a point is flagged when at least ``k`` of the last ``n`` points (itself included) crossed the
threshold. Vectorised with a cumulative sum; one device per call (``k_of_n_expr`` does the same per device in
Polars).

Smoothing changes the false-alarm rate a threshold gives, so fit the threshold on what the smoothed flag really
tests: ``k_of_n(s > t, k, n)`` equals ``k_of_n_statistic(s, k, n) > t`` (the k-th largest score of the window), and
``scoring.smoothed_threshold`` is the POT (or quantile) threshold of that statistic on the baseline. Without
it a threshold fitted on single points is needlessly high (isolated baseline spikes that k-of-n would drop anyway
set it) and misses slow faults.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl
from scipy import stats

XI_MIN, XI_MAX = -0.5, 1.0
DEFAULT_MIN_EXCEEDANCES = 20
MIN_TAIL_QUANTILE = 0.8


def _finite(scores: np.ndarray) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64).ravel()
    return s[np.isfinite(s)]


@dataclass(frozen=True)
class GPDTail:
    """A fitted POT tail: threshold ``u``, GPD shape ``xi`` and scale ``sigma``, exceedance share ``zeta``.

    ``method`` says how it was obtained: ``"gpd"`` (MLE fit), ``"exponential"`` (flat or failed fit, ``xi = 0``,
    ``sigma = mean excess``), ``"empirical"`` (too few exceedances; quantiles then come from ``sorted_tail``).
    """

    u: float
    xi: float
    sigma: float
    zeta: float
    n: int
    n_exceedances: int
    method: str

    def quantile(self, risk: float) -> float:
        """Score exceeded by a baseline point with probability ``risk`` (only valid for ``risk < zeta``)."""
        if self.sigma <= 0:
            return self.u
        ratio = risk / self.zeta
        if abs(self.xi) < 1e-9:
            z = self.u - self.sigma * math.log(ratio)
        else:
            z = self.u + self.sigma / self.xi * (ratio ** (-self.xi) - 1.0)
        return max(self.u, z)

    def neg_log10_sf(self, x: np.ndarray) -> np.ndarray:
        """``-log10 P(S > x)`` for ``x >= u`` under the tail model (monotone, finite; bounded tails use ``xi >= 0``)."""
        x = np.asarray(x, dtype=np.float64)
        base = -math.log10(self.zeta)
        if self.sigma <= 0:
            # Degenerate tail: every excess above u is "infinitely" rare; keep it finite and monotone.
            return base + np.maximum(x - self.u, 0.0) * 1e6
        y = np.maximum(x - self.u, 0.0) / self.sigma
        xi = max(self.xi, 0.0)  # a bounded tail (xi < 0) would give -log10(0) = inf past its endpoint
        if xi < 1e-9:
            return base + y / math.log(10.0)
        return base + np.log1p(xi * y) / (xi * math.log(10.0))

    def as_dict(self) -> dict:
        return asdict(self)


def fit_gpd_tail(
    baseline_scores: np.ndarray,
    tail_quantile: float = 0.98,
    min_exceedances: int = DEFAULT_MIN_EXCEEDANCES,
) -> GPDTail:
    """Fit the POT tail of ``baseline_scores`` (non-finite values ignored). See the module docstring for fallbacks."""
    if not 0.0 < tail_quantile < 1.0:
        raise ValueError(f"tail_quantile={tail_quantile} must be in (0, 1)")
    s = _finite(baseline_scores)
    n = s.size
    if n == 0:
        raise ValueError("no finite baseline scores")
    u = float(np.quantile(s, tail_quantile))
    excess = s[s > u] - u
    k = int(excess.size)
    zeta = max(k, 1) / n
    if k < min_exceedances or n < 2 * min_exceedances:
        return GPDTail(u, 0.0, 0.0, zeta, n, k, "empirical")
    mean_excess = float(excess.mean())
    if float(excess.max() - excess.min()) <= 1e-12 * max(1.0, abs(u)):
        return GPDTail(u, 0.0, mean_excess, zeta, n, k, "exponential")
    # From the method-of-moments estimate, not scipy's generic guess: a third fewer Nelder-Mead steps, same fit.
    ratio = mean_excess**2 / max(float(excess.var()), 1e-300)
    xi0, sigma0 = float(np.clip(0.5 * (1.0 - ratio), -0.45, 0.45)), 0.5 * mean_excess * (1.0 + ratio)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            xi, _, sigma = stats.genpareto.fit(excess, xi0, floc=0, scale=sigma0)
    except Exception:  # noqa: BLE001 - scipy raises a variety of errors on degenerate samples
        xi, sigma = float("nan"), float("nan")
    if not (np.isfinite(xi) and np.isfinite(sigma) and sigma > 0):
        return GPDTail(u, 0.0, mean_excess, zeta, n, k, "exponential")
    return GPDTail(u, float(np.clip(xi, XI_MIN, XI_MAX)), float(sigma), zeta, n, k, "gpd")


def quantile_threshold(baseline_scores: np.ndarray, q: float) -> float:
    """Empirical quantile ``q`` of the finite baseline scores (numpy "linear" interpolation)."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q={q} must be in [0, 1]")
    s = _finite(baseline_scores)
    if s.size == 0:
        raise ValueError("no finite baseline scores")
    return float(np.quantile(s, q))


def pot_threshold(
    baseline_scores: np.ndarray,
    tail_quantile: float = 0.98,
    risk: float = 1e-4,
    min_exceedances: int = DEFAULT_MIN_EXCEEDANCES,
) -> float:
    """Peaks-over-threshold threshold: the score a baseline point exceeds with probability ``risk``."""
    return pot_threshold_details(baseline_scores, tail_quantile, risk, min_exceedances)["threshold"]


def pot_threshold_details(
    baseline_scores: np.ndarray,
    tail_quantile: float = 0.98,
    risk: float = 1e-4,
    min_exceedances: int = DEFAULT_MIN_EXCEEDANCES,
) -> dict:
    """``pot_threshold`` plus the fitted tail (JSON-able dict: threshold, method, u, xi, sigma, zeta, n, ...)."""
    if not 0.0 < risk < 1.0:
        raise ValueError(f"risk={risk} must be in (0, 1)")
    n = _finite(baseline_scores).size
    # A short baseline has too few points above the configured tail quantile to fit a tail: start the tail lower
    # (min_exceedances points above it, never below MIN_TAIL_QUANTILE) rather than fall back to its maximum,
    # which promises a risk of 1 / n whatever the configured risk.
    if n * (1.0 - tail_quantile) < min_exceedances <= n * (1.0 - MIN_TAIL_QUANTILE):
        tail_quantile = 1.0 - min_exceedances / n
    tail = fit_gpd_tail(baseline_scores, tail_quantile, min_exceedances)
    method = tail.method
    if method == "empirical" or risk >= tail.zeta:
        threshold = quantile_threshold(baseline_scores, 1.0 - risk)
        method = "empirical" if method == "empirical" else "empirical_body"
    else:
        threshold = tail.quantile(risk)
    return {**tail.as_dict(), "method": method, "threshold": float(threshold), "risk": risk,
            "tail_quantile": tail_quantile}


def k_of_n(flags: np.ndarray, k: int, n: int) -> np.ndarray:
    """Flag a point when at least ``k`` of the last ``n`` points (itself included) are flagged. One device, time order.

    ``k = n = 1`` returns the flags unchanged. The first ``n - 1`` points look at the shorter history available.
    """
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    f = np.asarray(flags, dtype=bool).ravel()
    if k == 1 and n == 1:
        return f.copy()
    c = np.concatenate(([0], np.cumsum(f, dtype=np.int64)))
    idx = np.arange(1, f.size + 1)
    counts = c[idx] - c[np.maximum(idx - n, 0)]
    return counts >= k


def k_of_n_statistic(scores: np.ndarray, k: int, n: int) -> np.ndarray:
    """The k-th largest score among the last ``n`` points (itself included); ``-inf`` while fewer than ``k`` exist.

    ``k_of_n(scores > t, k, n) == (k_of_n_statistic(scores, k, n) > t)`` for every ``t``, so a threshold fitted on
    the statistic of the *baseline* scores (``pot_threshold(k_of_n_statistic(baseline, k, n))``) controls the
    false-alarm risk of the *smoothed* flags -- the ones that page someone. NaN scores never count as exceeding.
    """
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    s = np.asarray(scores, dtype=np.float64).ravel()
    s = np.where(np.isnan(s), -np.inf, s)
    if n == 1:
        return s
    padded = np.concatenate([np.full(n - 1, -np.inf), s])
    windows = np.lib.stride_tricks.sliding_window_view(padded, n)
    return np.partition(windows, n - k, axis=1)[:, n - k]


def k_of_n_expr(flag: str | pl.Expr, k: int, n: int, by: str | list[str] | None = "device_id") -> pl.Expr:
    """Polars expression for ``k_of_n`` over a boolean column, per ``by`` group. The frame must be sorted by time
    within each group. Null flags count as not flagged."""
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    col = pl.col(flag) if isinstance(flag, str) else flag
    counts = col.fill_null(False).cast(pl.Int32).rolling_sum(window_size=n, min_samples=1)
    if by is not None:
        counts = counts.over(by)
    return counts >= k
