"""What a detector learns about each feature from a device's baseline rows before any model sees them.

Four roles, decided on the training rows only:

* **continuous**: standard-scaled (training mean / std, NaN -> training median) and fed to the multivariate models.
  Never clipped: a reading 40 standard deviations away must score higher than one 5 away (scores are monotone
  and unbounded in the size of a deviation).
* **event-like**: one value covers >= ``event_mode_share`` of the training rows, or the feature takes at most
  ``EVENT_MAX_DISTINCT`` values (counters, "time since" caps, flags, the dominant frequency of a short FFT block). Their rare but normal values would set a continuous model's tail, so they get
  their own statistic (``components.EventTail``).
* **guard**: constant in training (a flat-line flag that never fired); any later deviation is novelty, scored by
  the event statistic.
* **persistent** (a kind of continuous feature): varies, but too slowly for the baseline to show its normal
  range: fewer than ``min_effective_samples`` effectively independent samples ``n (1 - r) / (1 + r)`` (``r`` =
  lag-1 autocorrelation; a 30-minute mean over a 17-hour baseline holds about 6). PCA fitted on such features
  spends its components on one excursion of them and its residual Q flags the next (on the Tennessee Eastman
  process: 8 % of the normal hold-out). So PCA sees only the other continuous features (``Preprocessor.fast``);
  the shrinkage Mahalanobis distance, whose Ledoit-Wolf ridge keeps a poorly sampled direction from dominating,
  sees all of them -- a slow overheat that breaks the coupling of temperature and load is found there. Listed in
  ``Detector.params()["persistent_features"]`` with their effective sample counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MIN_EFFECTIVE_SAMPLES = 30.0
EVENT_MAX_DISTINCT = 16  # a feature with this few values is discrete: a jump between them is no Gaussian deviation
_EPS = 1e-12


@dataclass
class Batch:
    """Rows as the models see them."""

    z: np.ndarray  # scaled continuous features, float32 C-contiguous (n, len(prep.kept))
    ev: np.ndarray  # event + guard features in original units, NaN imputed, float64 (n, len(prep.event_cols))

    def take(self, rows: np.ndarray) -> Batch:
        return Batch(self.z[rows], self.ev[rows])


def effective_samples(x: np.ndarray) -> np.ndarray:
    """Per column of a time-ordered matrix (no NaN): ``n (1 - r) / (1 + r)`` with ``r`` its lag-1 autocorrelation
    (clipped to [0, 1)): how many independent samples the column is worth for learning its normal range."""
    n = x.shape[0]
    xc = x - x.mean(axis=0)
    denom = np.einsum("ij,ij->j", xc, xc)
    lag = np.einsum("ij,ij->j", xc[1:], xc[:-1]) if n > 1 else np.zeros(x.shape[1])
    r = np.clip(np.divide(lag, denom, out=np.zeros_like(lag), where=denom > 0), 0.0, 1.0 - 1e-9)
    return n * (1.0 - r) / (1.0 + r)


@dataclass
class Preprocessor:
    kept: np.ndarray  # int64 indices of the continuous features (model input)
    fill: np.ndarray  # float32 training median per kept feature
    center: np.ndarray  # float32 training mean (after imputation)
    scale: np.ndarray  # float32 training std (after imputation), > 0
    event: np.ndarray  # int64 indices of event-like features (dominant value in training)
    guard: np.ndarray  # int64 indices of features constant in training (finite constant)
    event_fill: np.ndarray  # float64 imputation value for event + guard columns
    constant_values: dict[str, float | None]  # constant features -> training value (None: all missing)
    fast: np.ndarray  # int64 positions in `kept` of the features with enough effective samples (PCA input)
    persistent: dict[str, float]  # the other kept features -> effective baseline samples
    n_effective: float  # median effective samples of the fast features (PCA capacity)

    @property
    def event_cols(self) -> np.ndarray:
        return np.concatenate([self.event, self.guard])

    @staticmethod
    def fit(
        train: np.ndarray,
        names: Sequence[str],
        event_mode_share: float | None,
        constant_guard: bool = True,
        min_effective_samples: float = MIN_EFFECTIVE_SAMPLES,
    ) -> Preprocessor:
        x = np.asarray(train, dtype=np.float32)
        n, p = x.shape
        finite = np.isfinite(x)
        n_finite = finite.sum(axis=0)
        ordered = np.ascontiguousarray(np.where(finite, x, np.nan).T)
        ordered.sort(axis=1)  # each feature's values in order, missing (NaN) last: one sort for all features
        med = np.zeros(p, dtype=np.float64)
        lo = np.zeros(p, dtype=np.float64)
        hi = np.zeros(p, dtype=np.float64)
        mode_share = np.zeros(p, dtype=np.float64)
        distinct = np.zeros(p, dtype=np.int64)
        for j in range(p):
            col = ordered[j, : n_finite[j]]
            if col.size == 0:
                continue
            h = col.size // 2
            med[j] = col[h] if col.size % 2 else (float(col[h - 1]) + float(col[h])) / 2  # as np.median
            lo[j], hi[j] = col[0], col[-1]
            starts = np.flatnonzero(np.r_[True, col[1:] != col[:-1]])
            mode_share[j] = np.diff(np.r_[starts, col.size]).max() / n
            distinct[j] = starts.size
        varying = (n_finite > 0) & (hi > lo)
        constant = {names[j]: (float(med[j]) if n_finite[j] else None) for j in np.flatnonzero(~varying)}
        guard = np.flatnonzero(~varying & (n_finite > 0)) if constant_guard else np.empty(0, dtype=np.int64)
        if event_mode_share is None:
            event = np.empty(0, dtype=np.int64)
        else:
            event = np.flatnonzero(varying & ((mode_share >= event_mode_share) | (distinct <= EVENT_MAX_DISTINCT)))
        cont = np.flatnonzero(varying & ~np.isin(np.arange(p), event))
        fill = med[cont].astype(np.float32)
        xk = np.where(finite[:, cont], x[:, cont], fill).astype(np.float64)
        center = xk.mean(axis=0) if n else np.zeros(cont.size)
        scale = xk.std(axis=0) if n else np.ones(cont.size)
        ok = scale > _EPS * np.maximum(1.0, np.abs(center))
        cont, fill, center, scale = cont[ok], fill[ok], center[ok], scale[ok]
        n_eff = effective_samples(xk[:, ok]) if n else np.zeros(cont.size)
        fast = np.flatnonzero(n_eff >= min_effective_samples)
        persistent = {names[j]: round(float(e), 1) for j, e in zip(cont, n_eff) if e < min_effective_samples}
        ev_cols = np.concatenate([event, guard])
        return Preprocessor(
            kept=cont.astype(np.int64),
            fill=fill.astype(np.float32),
            center=center.astype(np.float32),
            scale=scale.astype(np.float32),
            event=event.astype(np.int64),
            guard=guard.astype(np.int64),
            event_fill=med[ev_cols].astype(np.float64),
            constant_values=constant,
            fast=fast.astype(np.int64),
            persistent=persistent,
            n_effective=float(np.median(n_eff[fast])) if fast.size else 0.0,
        )

    def scale_continuous(self, x: np.ndarray) -> np.ndarray:
        """Scaled float32 C-contiguous matrix of the continuous features (NaN -> training median, +-inf -> +-1e6;
        no clipping)."""
        xk = np.asarray(x)[:, self.kept]
        z = np.empty(xk.shape, dtype=np.float32)
        np.subtract(xk, self.center, out=z, casting="unsafe")
        z *= 1.0 / self.scale
        nan = np.isnan(z)
        if nan.any():
            zfill = (self.fill - self.center) / self.scale
            np.copyto(z, np.broadcast_to(zfill, z.shape), where=nan)
        np.nan_to_num(z, copy=False, posinf=1e6, neginf=-1e6)
        return z

    def events(self, x: np.ndarray) -> np.ndarray:
        cols = self.event_cols
        ev = np.asarray(x)[:, cols].astype(np.float64)
        bad = ~np.isfinite(ev)
        if bad.any():
            np.copyto(ev, np.broadcast_to(self.event_fill, ev.shape), where=bad)
        return ev

    def transform(self, x: np.ndarray) -> Batch:
        return Batch(self.scale_continuous(x), self.events(x))
