"""Pure scoring functions of bench/real.py (no Dagster, no DuckDB, no data set): the NAB scorer and the textbook
PCA reference for TEP. Tested in itap_assets_tests/bench/test_real_scoring.py.

NAB (numenta/NAB, nab/sweeper.py — what nab/scorer.py calls — and nab/runner.py's normalisation):

* Probationary period: the first min(floor(0.15 · rows), 0.15 · 5000) rows; detections there are ignored, and a
  window none of whose rows lie after it does not count.
* A detection at row i inside a window [left, right] (row indices, inclusive, width = right - left + 1) is worth
  A_TP · S(-(right - i + 1) / width) / S(-1), with S(x) = 2 / (1 + e^{5x}) - 1 (the scaled sigmoid, S(x) = -1
  for x > 3): 1.0 at the window's first row, close to 0 at its last. Only the best (= first) detection of a window
  counts; a window without one costs -A_FN.
* A detection outside every window costs A_FP · S(|i - right_prev| / (width_prev - 1)) when a window precedes it
  (about -A_FP far behind it, less right after it), and -A_FP when none does. Every such detection is charged.
* Normalised score = 100 · (raw - null) / (perfect - null), summed over the files: null = the raw score of the
  detector that never detects (-A_FN per scored window; NAB's published null score is -116.0 for its 116 windows),
  perfect = A_TP per labelled window (NAB: tpCount · tpWeight).
Standard profile (config/profiles.json): A_TP = 1.0, A_FP = 0.11, A_FN = 1.0 (A_TN = 1.0 is unused by the scorer).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

STANDARD_PROFILE = {"tp": 1.0, "fp": 0.11, "fn": 1.0}
PROBATION_PERCENT = 0.15


# --------------------------------------------------------------------------------------------------- NAB


def probationary_length(rows: int, percent: float = PROBATION_PERCENT) -> int:
    """Rows at the start of a file whose detections NAB ignores (nab/sweeper.py `_getProbationaryLength`)."""
    return int(min(math.floor(percent * rows), percent * 5000))


def scaled_sigmoid(x: float) -> float:
    """NAB's scaled sigmoid: 2 · sigmoid(-5x) - 1, and -1 beyond x = 3."""
    return -1.0 if x > 3.0 else 2.0 / (1.0 + math.exp(5.0 * x)) - 1.0


@dataclass(frozen=True)
class NabFileScore:
    raw: float           # the file's NAB score
    null: float          # the never-detecting detector's score (-A_FN per scored window)
    perfect: float       # A_TP per labelled window
    windows: int         # labelled windows
    detected: int        # windows with a (scored) detection
    false_positives: int  # scored detections outside every window

    @property
    def normalised(self) -> float | None:
        return normalised(self.raw, self.null, self.perfect)


def normalised(raw: float, null: float, perfect: float) -> float | None:
    """100 · (raw - null) / (perfect - null); None when a file has no window (perfect = null = 0)."""
    return None if perfect == null else 100.0 * (raw - null) / (perfect - null)


def nab_score(rows: int, windows: Sequence[tuple[int, int]], detections: Sequence[int],
              profile: dict[str, float] = STANDARD_PROFILE) -> NabFileScore:
    """NAB score of one file of `rows` rows: `windows` are (first, last) row indices (0-based, inclusive, sorted,
    disjoint), `detections` the row indices where the detector fires (each is one positive prediction)."""
    probation = probationary_length(rows)
    max_tp = scaled_sigmoid(-1.0)
    scored_windows = [(a, b) for a, b in windows if b >= probation]
    best = {w: -profile["fn"] for w in scored_windows}
    fp_score, fp_count = 0.0, 0
    for i in sorted(set(int(d) for d in detections)):
        if i < probation or i >= rows:
            continue
        inside = next(((a, b) for a, b in windows if a <= i <= b), None)
        if inside is not None:
            a, b = inside
            width = b - a + 1
            tp = scaled_sigmoid(-(b - i + 1) / width) * profile["tp"] / max_tp
            best[inside] = max(best[inside], tp)
            continue
        preceding = [(a, b) for a, b in windows if b < i]
        if preceding:
            a, b = preceding[-1]
            width = b - a + 1
            # NAB divides by (width - 1); a one-row window would divide by zero there too
            position = abs(b - i) / float(width - 1) if width > 1 else math.inf
            fp_score += scaled_sigmoid(position) * profile["fp"]
        else:
            fp_score += -1.0 * profile["fp"]
        fp_count += 1
    detected = sum(1 for w in scored_windows if best[w] > -profile["fn"])
    return NabFileScore(
        raw=sum(best.values()) + fp_score,
        null=-profile["fn"] * len(scored_windows),
        perfect=profile["tp"] * len(windows),
        windows=len(windows),
        detected=detected,
        false_positives=fp_count,
    )


def window_rows(timestamps: np.ndarray, windows: Sequence[tuple[np.datetime64, np.datetime64]]
                ) -> list[tuple[int, int]]:
    """Window limits (timestamps) as row indices of a file sorted by time: the first row at or after the start,
    the last row at or before the end — of a duplicated timestamp its first row, as NAB's `timestamps.index`
    (NAB matches the limits to rows exactly; the labels are aligned with rows)."""
    out = []
    for start, end in windows:
        a = int(np.searchsorted(timestamps, start, side="left"))
        b = int(np.searchsorted(timestamps, end, side="right")) - 1
        if b >= a:
            out.append((a, int(np.searchsorted(timestamps, timestamps[b], side="left"))))
    return out


def nearest_rows(timestamps: np.ndarray, events: np.ndarray) -> np.ndarray:
    """For each event time, the index of the nearest row timestamp (the earlier one on a tie; the first of
    duplicated timestamps)."""
    if len(events) == 0:
        return np.array([], dtype=np.int64)
    right = np.clip(np.searchsorted(timestamps, events, side="left"), 0, len(timestamps) - 1)
    left = np.clip(right - 1, 0, len(timestamps) - 1)
    closer_left = np.abs(events - timestamps[left]) <= np.abs(timestamps[right] - events)
    idx = np.where(closer_left, left, right)
    # first occurrence of a duplicated timestamp, as NAB's `timestamps.index`
    return np.searchsorted(timestamps, timestamps[idx], side="left")


def rising_edges(flags: np.ndarray) -> np.ndarray:
    """Indices where a run of True starts (the first flagged point of each run)."""
    flags = np.asarray(flags, dtype=bool)
    previous = np.concatenate([[False], flags[:-1]])
    return np.flatnonzero(flags & ~previous)


# --------------------------------------------------------------------------------------------------- PCA


@dataclass(frozen=True)
class PcaMonitor:
    mean: np.ndarray
    std: np.ndarray
    loadings: np.ndarray   # (variables, components)
    eigenvalues: np.ndarray  # all, descending
    components: int
    t2_limit: float
    q_limit: float

    def statistics(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Hotelling T² and Q (SPE) of each row of x."""
        z = (x - self.mean) / self.std
        t = z @ self.loadings
        t2 = np.sum(t**2 / self.eigenvalues[: self.components], axis=1)
        residual = z - t @ self.loadings.T
        return t2, np.sum(residual**2, axis=1)

    def flags(self, x: np.ndarray) -> np.ndarray:
        t2, q = self.statistics(x)
        return (t2 > self.t2_limit) | (q > self.q_limit)


def fit_pca_monitor(baseline: np.ndarray, components: int = 9, alpha: float = 0.99) -> PcaMonitor:
    """Textbook PCA process monitoring (Chiang, Russell & Braatz): z-score on the baseline (sample std), keep
    `components` principal components of the correlation matrix; T² limit a(n-1)(n+1)/(n(n-a)) · F(a, n-a) at
    `alpha`, Q limit by Jackson & Mudholkar at `alpha`."""
    n, _ = baseline.shape
    mean = baseline.mean(axis=0)
    std = baseline.std(axis=0, ddof=1)
    std = np.where(std > 0, std, 1.0)
    z = (baseline - mean) / std
    eigenvalues, vectors = np.linalg.eigh(np.cov(z, rowvar=False))
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues, vectors = np.clip(eigenvalues[order], 0.0, None), vectors[:, order]
    a = components
    t2_limit = a * (n - 1) * (n + 1) / (n * (n - a)) * stats.f.ppf(alpha, a, n - a)
    return PcaMonitor(mean, std, vectors[:, :a], eigenvalues, a, float(t2_limit),
                      jackson_mudholkar(eigenvalues[a:], alpha))


def jackson_mudholkar(residual_eigenvalues: np.ndarray, alpha: float = 0.99) -> float:
    """Q (SPE) control limit from the eigenvalues of the discarded components."""
    theta1, theta2, theta3 = (float(np.sum(residual_eigenvalues**k)) for k in (1, 2, 3))
    h0 = 1.0 - 2.0 * theta1 * theta3 / (3.0 * theta2**2)
    c = stats.norm.ppf(alpha)
    return theta1 * (c * math.sqrt(2.0 * theta2 * h0**2) / theta1 + 1.0
                     + theta2 * h0 * (h0 - 1.0) / theta1**2) ** (1.0 / h0)
