"""Anomaly detectors behind one interface: fit on a device's healthy baseline, score, attribute.

    det = fit_detector(train, feature_names, kind="pca", seed=0)   # train: float32 n x p, NaN allowed, time order
    det.score(X)             # calibrated scores, higher = more anomalous (float64, n)
    det.attribution(X)       # n x p non-negative per-feature contributions of the statistic that scored the row
    s = det.scored(X)        # s.score as above, keeping what attribution needs: det.attribution_of(s.take(rows))
    det.baseline_scores      # calibrated scores of the training rows (time order) -> label-free thresholds
    det.params()             # JSON-able description (kind, feature roles, model sizes, calibration)
    pickle.dumps(det)        # the model registry stores it as a BLOB

Pure numpy/scikit-learn/scipy: no Dagster, no Polars (the caller turns a feature frame into a float32 matrix whose
NULLs arrive as NaN).

Preprocessing (learned on training rows only): three feature roles
-------------------------------------------------------------------
* **continuous** features: NaN -> training median, standard scaling (training mean / std), clipped to ``+-clip_z``
  (default 5) so one feature cannot swamp a score. They feed the PCA / IsolationForest models.
* **event-like** features: one value covers >= ``event_mode_share`` (default 50 %) of the training rows -- counters,
  "time since" caps, flags, discrete spectral bins (in the ITAP registry: missing streaks, time since dropout,
  state transitions / time since change, sometimes a dominant frequency). Inside a continuous model their rare
  but normal values (a sporadic missing sample = a 40-sigma "outlier") set the baseline tail and blunt every
  threshold, so they get their own statistic (``event`` below).
* **constant** features (zero variance or all-missing in training) are dropped from the models and remembered
  (``params()["constant_features"]``); with ``constant_guard`` (default on) a finite constant becomes an event
  "guard": any later deviation is scored as novelty (e.g. a flat-line flag that never fired in training).

Detectors and their statistics (each calibrated separately, then combined with the maximum)
--------------------------------------------------------------------------------------------
``iforest``  StandardScaler + IsolationForest (the predecessor's baseline); statistic ``iforest`` =
             ``2 ** (-E[h] / c(psi))`` (= ``-score_samples``), computed from the fitted trees with ``Tree.apply``
             so it runs in threads (sklearn's ``score_samples`` ignores ``n_jobs``).
``pca``      PCA on the scaled continuous baseline, the smallest number of components explaining
             ``pca_variance`` (default 0.997; at most p - 1). Statistics ``pca_t2`` (Hotelling's T2, unusual
             operating point inside the model plane) and ``pca_q`` (Q/SPE, squared residual = broken correlations
             between sensors), each divided by its baseline 99th percentile. ``pca_combine="sum"`` gives the single
             combined index ``T2/q99 + Q/q99`` instead (slightly worse ROC-AUC on the simulated fleet).
``ensemble`` both models' statistics.
``event``    added to every kind when event/guard features exist: per feature the excess of ``|x - mode|`` over the
             largest training distance in units of the mean non-zero training distance (an exponential tail beyond
             the training range), ``max_j excess_j / ln 10``; 0 inside the training range.

Calibration: per device, against its own baseline
-------------------------------------------------
Every model statistic is mapped to ``-log10 P_baseline(S >= s)``: the tail probability of the raw value under the
device's own baseline distribution -- empirical below the baseline 98th percentile (1025 quantile knots), above it
the peaks-over-threshold generalized Pareto tail (``thresholds.fit_gpd_tail``; bounded tails are treated as
exponential so the map stays finite and monotone past the largest baseline value). The baseline values come from
**out-of-fold** scoring (``calibration_folds=3``; time blocks of ``calibration_block_rows`` rows dealt round-robin to
the folds, each scored by models fitted on the other folds) because in-sample scores of a ~45-component PCA are
optimistic (on 4 simulated 10-device fleets: point false-alarm rate 1.83 % in-sample vs 1.71 % out-of-fold, same
episode recall). Short blocks (default 60 rows = 10 min at 10 s; scale it with the sample rate) keep each fold's
model seeing every operating state of the day -- 3 contiguous thirds made the calibration far too conservative. The ``event`` statistic is
already a -log10 tail probability and is not re-calibrated. So a calibrated 4 means "1-in-10,000 for this device"
on every device and for every statistic, one threshold means the same everywhere, and taking the maximum of
statistics is meaningful. ``Detector.baseline_scores`` holds the calibrated baseline in time order for thresholds.

Attribution: follows the statistic that scored the row
------------------------------------------------------
For each row the statistic with the largest calibrated score explains it (if it attributes nothing, the next):

``pca_q``    ``e_j**2 / q99(Q)``: the exact squared residual of each feature (sums to the normalised Q).
``pca_t2``   ``(z @ P diag(lam^-1/2) P^T)_j**2 / q99(T2)``: complete-decomposition contributions (Alcala & Qin
             2011), non-negative, sum to the normalised T2.
``iforest``  path-based: per tree the isolation deficit ``c(psi) - h(x)`` telescopes exactly over the edges of the
             row's path, ``sum_edges c(n_parent) - c(n_child) - 1``; each edge is charged to the feature its parent
             split on; averaged over trees, clipped at 0 (``_IForest.path_credit`` is the unclipped decomposition).
``event``    each event/guard feature's own excess score.
The row is then rescaled to sum to its calibrated score (shares are exactly the statistic's decomposition).
Features the explaining statistic does not use get 0. Attribution is for flagged rows (few); it is vectorised.

Speed: scoring runs in row chunks on ``n_threads`` threads (numpy and ``Tree.apply`` release the GIL) with BLAS
held to one thread meanwhile, float32 throughout. See ``bench/scoring.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import numpy as np
from scipy import sparse
from sklearn.ensemble import IsolationForest

from itap_assets.core.parallel import blas_single_thread, default_threads
from itap_assets.core.thresholds import fit_gpd_tail

T = TypeVar("T")

DetectorKind = Literal["iforest", "pca", "ensemble"]
KINDS: tuple[str, ...] = ("iforest", "pca", "ensemble")
DEFAULT_KIND: DetectorKind = "pca"
CALIBRATION_TAIL_QUANTILE = 0.98
NORMALISER_QUANTILE = 0.99
_KNOTS = 1025
_MIN_FOLD_ROWS = 200
_EPS = 1e-12


@dataclass(frozen=True)
class DetectorConfig:
    """Hyper-parameters (all JSON-able)."""

    pca_variance: float = 0.997
    pca_max_components: int | None = None
    pca_ridge: float = 0.0  # added to every retained eigenvalue (scaled space: mean eigenvalue 1) before T2
    pca_combine: Literal["max", "sum"] = "max"  # T2 and Q calibrated separately then max, or one summed statistic
    iforest_trees: int = 50  # 100 trees gave the same ROC-AUC on the simulated fleet at twice the cost
    iforest_max_samples: int = 256
    clip_z: float | None = 5.0
    calibration_rows: int = 200_000  # cap on baseline rows scored for calibration (systematic subsample above it)
    calibration_folds: int = 3  # >= 2: out-of-fold calibration (interleaved time blocks); 1: in-sample
    calibration_block_rows: int = 60  # rows per time block dealt round-robin to the folds (10 min at 10 s)
    event_mode_share: float | None = 0.5  # features whose most frequent training value covers this share -> event
    constant_guard: bool = True  # score deviations of features that were constant in training (event component)
    event_score: Literal["excess", "pvalue"] = "excess"
    event_prior: float = 5.0  # pseudo-observations beyond every event feature's training range (p-value smoothing)
    chunk_rows: int = 16_384
    n_threads: int = field(default_factory=default_threads)

    def __post_init__(self) -> None:
        if not 0.0 < self.pca_variance <= 1.0:
            raise ValueError(f"pca_variance={self.pca_variance} must be in (0, 1]")
        if self.iforest_trees < 1 or self.iforest_max_samples < 2:
            raise ValueError("iforest_trees >= 1 and iforest_max_samples >= 2 required")
        if self.clip_z is not None and self.clip_z <= 0:
            raise ValueError("clip_z must be positive or None")


# ----------------------------------------------------------------------------------------------------------------
# preprocessing


@dataclass
class _Batch:
    z: np.ndarray  # scaled continuous features, float32 C-contiguous (n, len(prep.kept))
    ev: np.ndarray  # event + guard features in original units, NaN imputed, float64 (n, len(prep.event_cols))


@dataclass
class Scored:
    """Rows as a detector saw them (``Detector.scored``): what attributing them needs, so flagged rows are not
    transformed and calibrated a second time."""

    batch: _Batch
    calibrated: np.ndarray  # (n, n_statistics), `Detector.statistics` order

    @property
    def score(self) -> np.ndarray:
        return self.calibrated.max(axis=1)

    def take(self, rows: np.ndarray) -> Scored:
        return Scored(_Batch(self.batch.z[rows], self.batch.ev[rows]), self.calibrated[rows])


@dataclass
class _Preprocessor:
    kept: np.ndarray  # int64 indices of the continuous features (PCA / IsolationForest input)
    fill: np.ndarray  # float32 training median per kept feature
    center: np.ndarray  # float32 training mean (after imputation)
    scale: np.ndarray  # float32 training std (after imputation), > 0
    event: np.ndarray  # int64 indices of event-like features (dominant value in training)
    guard: np.ndarray  # int64 indices of features constant in training (finite constant)
    event_fill: np.ndarray  # float64 imputation value for event + guard columns
    constant_values: dict[str, float | None]  # constant features -> training value (None: all missing)
    clip_z: float | None

    @property
    def event_cols(self) -> np.ndarray:
        return np.concatenate([self.event, self.guard])

    @staticmethod
    def fit(
        train: np.ndarray,
        names: Sequence[str],
        clip_z: float | None,
        event_mode_share: float | None,
        constant_guard: bool = False,
    ) -> _Preprocessor:
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
        for j in range(p):
            col = ordered[j, : n_finite[j]]
            if col.size == 0:
                continue
            h = col.size // 2
            med[j] = col[h] if col.size % 2 else (float(col[h - 1]) + float(col[h])) / 2  # as np.median
            lo[j], hi[j] = col[0], col[-1]
            starts = np.flatnonzero(np.r_[True, col[1:] != col[:-1]])
            mode_share[j] = np.diff(np.r_[starts, col.size]).max() / n
        varying = (n_finite > 0) & (hi > lo)
        constant = {names[j]: (float(med[j]) if n_finite[j] else None) for j in np.flatnonzero(~varying)}
        guard = np.flatnonzero(~varying & (n_finite > 0)) if constant_guard else np.empty(0, dtype=np.int64)
        if event_mode_share is None:
            event = np.empty(0, dtype=np.int64)
        else:
            event = np.flatnonzero(varying & (mode_share >= event_mode_share))
        cont = np.flatnonzero(varying & ~np.isin(np.arange(p), event))
        fill = med[cont].astype(np.float32)
        xk = np.where(finite[:, cont], x[:, cont], fill).astype(np.float64)
        center = xk.mean(axis=0) if n else np.zeros(cont.size)
        scale = xk.std(axis=0) if n else np.ones(cont.size)
        ok = scale > _EPS * np.maximum(1.0, np.abs(center))
        cont, fill, center, scale = cont[ok], fill[ok], center[ok], scale[ok]
        ev_cols = np.concatenate([event, guard])
        return _Preprocessor(
            kept=cont.astype(np.int64),
            fill=fill.astype(np.float32),
            center=center.astype(np.float32),
            scale=scale.astype(np.float32),
            event=event.astype(np.int64),
            guard=guard.astype(np.int64),
            event_fill=med[ev_cols].astype(np.float64),
            constant_values=constant,
            clip_z=clip_z,
        )

    def scale_continuous(self, x: np.ndarray) -> np.ndarray:
        """Scaled float32 C-contiguous matrix of the continuous features (NaN -> training median)."""
        xk = np.asarray(x)[:, self.kept]
        z = np.empty(xk.shape, dtype=np.float32)
        np.subtract(xk, self.center, out=z, casting="unsafe")
        z *= 1.0 / self.scale
        nan = np.isnan(z)
        if nan.any():
            zfill = (self.fill - self.center) / self.scale
            np.copyto(z, np.broadcast_to(zfill, z.shape), where=nan)
        if self.clip_z is not None:
            np.clip(z, -self.clip_z, self.clip_z, out=z)  # also bounds +-inf
        else:
            np.nan_to_num(z, copy=False, posinf=1e6, neginf=-1e6)
        return z

    def events(self, x: np.ndarray) -> np.ndarray:
        cols = self.event_cols
        ev = np.asarray(x)[:, cols].astype(np.float64)
        bad = ~np.isfinite(ev)
        if bad.any():
            np.copyto(ev, np.broadcast_to(self.event_fill, ev.shape), where=bad)
        return ev

    def transform(self, x: np.ndarray) -> _Batch:
        return _Batch(self.scale_continuous(x), self.events(x))


# ----------------------------------------------------------------------------------------------------------------
# calibration


@dataclass
class _TailCalibrator:
    """raw score -> -log10 baseline tail probability (empirical body + POT tail)."""

    knots: np.ndarray  # float64 raw-score quantiles at `probs`
    probs: np.ndarray
    u: float
    xi: float
    sigma: float
    tail_q: float
    method: str

    @staticmethod
    def fit(raw: np.ndarray, tail_q: float = CALIBRATION_TAIL_QUANTILE) -> _TailCalibrator:
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
        return _TailCalibrator(knots, probs, float(knots[-1]), float(max(xi, 0.0)), float(sigma), tail_q, method)

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        r = np.asarray(raw, dtype=np.float64)
        body = -np.log10(1.0 - np.interp(np.minimum(r, self.u), self.knots, self.probs))
        y = np.maximum(r - self.u, 0.0) / self.sigma
        if self.xi < 1e-9:
            extra = y / math.log(10.0)
        else:
            extra = np.log1p(self.xi * y) / (self.xi * math.log(10.0))
        return body + extra

    def params(self) -> dict:
        return {"tail_quantile": self.tail_q, "u": self.u, "xi": self.xi, "sigma": self.sigma, "method": self.method,
                "median_raw": float(np.interp(0.5, self.probs, self.knots))}


class _Identity:
    """Calibrator of a component whose raw score already is a -log10 tail probability."""

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        return np.asarray(raw, dtype=np.float64)

    def params(self) -> dict:
        return {"method": "identity"}


# ----------------------------------------------------------------------------------------------------------------
# components


def _avg_path_length(n: np.ndarray) -> np.ndarray:
    """c(n) of Liu et al. (same as sklearn's _average_path_length)."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    out[n == 2] = 1.0
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


class _IForest:
    name = "iforest"
    uses = "z"
    stats = ("iforest",)

    def __init__(self, z: np.ndarray, seed: int, trees: int, max_samples: int) -> None:
        self.model = IsolationForest(
            n_estimators=trees, max_samples=min(max_samples, z.shape[0]), random_state=seed, n_jobs=1
        ).fit(z)
        self.psi = int(self.model.max_samples_)
        self.c_psi = float(_avg_path_length(np.array([self.psi]))[0])
        self.trees = [est.tree_ for est in self.model.estimators_]
        self.features = [np.asarray(f) for f in self.model.estimators_features_]
        self.full = [bool(f.size == z.shape[1] and np.all(f == np.arange(z.shape[1]))) for f in self.features]
        # h(leaf) = depth(leaf) + c(n_leaf); sklearn's node depths are 1-based.
        self.leaf_h = [
            (t.compute_node_depths() - 1.0 + _avg_path_length(t.n_node_samples)).astype(np.float64)
            for t in self.trees
        ]
        self._edge = None  # lazily built sparse edge-credit matrices (attribution)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_edge"] = None
        return state

    def raw(self, z: np.ndarray) -> np.ndarray:
        return self._score(z)[:, None]

    def _score(self, z: np.ndarray) -> np.ndarray:
        h = np.zeros(z.shape[0], dtype=np.float64)
        for tree, feats, full, lh in zip(self.trees, self.features, self.full, self.leaf_h):
            zz = z if full else np.ascontiguousarray(z[:, feats])
            h += lh[tree.apply(zz)]
        h /= len(self.trees)
        return np.exp2(-h / self.c_psi) if self.c_psi > 0 else np.ones_like(h)

    def _edge_matrices(self, p: int) -> list[sparse.csr_matrix]:
        if self._edge is None:
            mats = []
            for tree, feats in zip(self.trees, self.features):
                nodes = tree.node_count
                parent = np.full(nodes, -1, dtype=np.int64)
                left, right = tree.children_left, tree.children_right
                internal = np.flatnonzero(left >= 0)
                parent[left[internal]] = internal
                parent[right[internal]] = internal
                child = np.flatnonzero(parent >= 0)
                c = _avg_path_length(tree.n_node_samples)
                credit = c[parent[child]] - c[child] - 1.0
                feat = feats[tree.feature[parent[child]]]
                mats.append(sparse.csr_matrix((credit, (child, feat)), shape=(nodes, p)))
            self._edge = mats
        return self._edge

    def path_credit(self, z: np.ndarray) -> np.ndarray:
        """Per-feature share of the isolation deficit ``c(psi) - E[h(x)]`` (rows sum to it exactly; may be < 0)."""
        out = np.zeros(z.shape, dtype=np.float64)
        for tree, feats, full, edge in zip(self.trees, self.features, self.full, self._edge_matrices(z.shape[1])):
            zz = z if full else np.ascontiguousarray(z[:, feats])
            path = tree.decision_path(zz)
            out += np.asarray((path @ edge).todense())
        out /= len(self.trees)
        return out

    def attribution(self, z: np.ndarray, stat: int = 0) -> np.ndarray:
        return np.maximum(self.path_credit(z), 0.0)

    def params(self) -> dict:
        return {"trees": len(self.trees), "max_samples": self.psi}


class _PCA:
    name = "pca"
    uses = "z"

    def __init__(
        self, z: np.ndarray, variance: float, max_components: int | None, ridge: float = 0.0, combine: str = "max",
        cov: np.ndarray | None = None,
    ) -> None:
        self.combine = combine
        self.stats = ("pca_t2", "pca_q") if combine == "max" else ("pca",)
        p = z.shape[1]
        if cov is None:
            cov = np.cov(z, rowvar=False, dtype=np.float64).reshape(p, p)
        lam, vec = np.linalg.eigh(cov)
        order = np.argsort(lam)[::-1]
        lam, vec = np.maximum(lam[order], 0.0), vec[:, order]
        total = lam.sum()
        frac = np.cumsum(lam) / total if total > 0 else np.ones(p)
        k = int(np.searchsorted(frac, variance - 1e-12) + 1)
        upper = max(1, p - 1)
        if max_components is not None:
            upper = min(upper, max_components)
        k = max(1, min(k, upper))
        lam_k = np.maximum(lam[:k], _EPS + 1e-6 * lam[0]) + ridge
        self.k = k
        self.explained = float(frac[k - 1])
        self.lam = lam_k.astype(np.float64)
        self.P = np.ascontiguousarray(vec[:, :k], dtype=np.float32)
        self.inv_lam = (1.0 / lam_k).astype(np.float32)
        self.W = np.ascontiguousarray((vec[:, :k] * lam_k**-0.5) @ vec[:, :k].T, dtype=np.float32)
        t2, q = self._stats(z[:: max(1, z.shape[0] // 20_000)])
        self.t2_norm = max(float(np.quantile(t2, NORMALISER_QUANTILE)), _EPS)
        self.q_norm = max(float(np.quantile(q, NORMALISER_QUANTILE)), _EPS, 1e-9 * float(np.mean(t2) + 1.0))

    def _stats(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = z @ self.P
        t2 = np.einsum("ij,ij,j->i", t, t, self.inv_lam, dtype=np.float64, optimize=False)
        e = z - t @ self.P.T
        q = np.einsum("ij,ij->i", e, e, dtype=np.float64)
        return t2, q

    def raw(self, z: np.ndarray) -> np.ndarray:
        t2, q = self._stats(z)
        t2 /= self.t2_norm
        q /= self.q_norm
        if self.combine == "max":
            return np.stack([t2, q], axis=1)
        return (t2 + q)[:, None]

    def attribution(self, z: np.ndarray, stat: int = 0) -> np.ndarray:
        """Q: ``e_j**2 / q_norm`` (sums to Q / q_norm); T2: ``(z W)_j**2 / t2_norm`` (sums to T2 / t2_norm).
        float32, like the statistics they split (percentages need no more)."""
        if self.combine == "max":
            return self._t2_parts(z) if stat == 0 else self._q_parts(z)
        return self._t2_parts(z) + self._q_parts(z)

    def _t2_parts(self, z: np.ndarray) -> np.ndarray:
        w = z @ self.W
        return w * w / np.float32(self.t2_norm)

    def _q_parts(self, z: np.ndarray) -> np.ndarray:
        e = z - (z @ self.P) @ self.P.T
        return e * e / np.float32(self.q_norm)

    def params(self) -> dict:
        return {
            "components": self.k,
            "explained_variance": self.explained,
            "t2_normaliser_q99": self.t2_norm,
            "q_normaliser_q99": self.q_norm,
        }


class _EventTail:
    """Event-like features (a dominant value in training: counters, "time since" caps, flags, discrete spectra) and,
    optionally, features that were constant in training ("guards"). Per feature the distance from the training mode
    ``d_j = |x_j - mode_j|`` is compared with the training distances:

    * ``mode="excess"`` (default): novelty beyond the training range only. Beyond the largest training distance
      ``d_max`` an exponential tail with the mean non-zero training distance ``s_j`` as scale (a GPD with xi = 0)
      gives ``-log10 P(D > d | D > d_max) = (d - d_max) / s_j / ln 10``; inside the range the score is 0. The score
      is already a tail probability, so this component is not re-calibrated (identity) and contributes 0 on the
      baseline. Rarity *inside* the range (a sporadic missing sample, a state change) is deliberately not scored:
      those are seen in every baseline and only produce false alarms.
    * ``mode="pvalue"``: also the empirical p-value inside the range, ``P(D >= d)`` with ``prior`` pseudo-counts.

    Raw score = max over features; attribution = the per-feature scores. A guard uses ``s_j = max(|constant|, 1)``.
    """

    name = "event"
    uses = "ev"
    stats = ("event",)
    _MAX_KNOTS = 1024

    def __init__(self, ev: np.ndarray, modes: np.ndarray, n_event: int, prior: float, mode: str = "excess") -> None:
        n, e = ev.shape
        self.mode = mode
        self.modes = modes.astype(np.float64)
        self.n_event = n_event
        self.prior = prior
        self.log_floor = -math.log10(max(prior, 0.5) / (n + prior))
        self.knots: list[np.ndarray] = []
        self.neglog_sf: list[np.ndarray] = []
        self.d_max = np.zeros(e)
        self.s = np.ones(e)
        for j in range(e):
            if j >= n_event:  # guard: never varied in training
                self.knots.append(np.zeros(1))
                self.neglog_sf.append(np.zeros(1))
                self.s[j] = max(abs(self.modes[j]), 1.0)
                continue
            d = np.sort(np.abs(ev[:, j] - self.modes[j]))
            uniq, first = np.unique(d, return_index=True)
            sf = (n - first + prior) / (n + prior)  # P(D >= u) with `prior` pseudo-observations in the far tail
            if uniq.size > self._MAX_KNOTS:
                pick = np.unique(np.linspace(0, uniq.size - 1, self._MAX_KNOTS).round().astype(np.int64))
                uniq, sf = uniq[pick], sf[pick]
            self.knots.append(uniq)
            self.neglog_sf.append(-np.log10(sf))
            self.d_max[j] = uniq[-1]
            nz = d[d > 0]
            self.s[j] = float(nz.mean()) if nz.size else 1.0

    def per_feature(self, ev: np.ndarray) -> np.ndarray:
        if self.mode == "excess":
            d = np.abs(ev - self.modes)
            d -= self.d_max
            np.maximum(d, 0.0, out=d)
            d *= 1.0 / (self.s * math.log(10.0))
            return d
        out = np.empty(ev.shape, dtype=np.float64)
        for j in range(ev.shape[1]):
            d = np.abs(ev[:, j] - self.modes[j])
            idx = np.searchsorted(self.knots[j], d, side="left")
            inside = idx < self.knots[j].size
            beyond = np.maximum(d - self.d_max[j], 0.0) / self.s[j] / math.log(10.0)
            col = np.where(inside, self.neglog_sf[j][np.minimum(idx, self.knots[j].size - 1)], self.log_floor)
            out[:, j] = col + np.where(inside, 0.0, beyond)
        return out

    def raw(self, ev: np.ndarray) -> np.ndarray:
        if ev.shape[1] == 0:
            return np.zeros((ev.shape[0], 1))
        return self.per_feature(ev).max(axis=1)[:, None]

    def attribution(self, ev: np.ndarray, stat: int = 0) -> np.ndarray:
        return self.per_feature(ev)

    def params(self) -> dict:
        return {"mode": self.mode, "event_features": self.n_event, "guard_features": len(self.knots) - self.n_event,
                "prior": self.prior, "p_floor": 10.0 ** -self.log_floor}


# ----------------------------------------------------------------------------------------------------------------
# the detector


class Detector:
    """A fitted, picklable per-device detector. Build it with ``fit_detector``."""

    def __init__(
        self,
        kind: DetectorKind,
        seed: int,
        feature_names: Sequence[str],
        config: DetectorConfig,
        prep: _Preprocessor,
        components: list,
        n_train: int,
    ) -> None:
        self.kind = kind
        self.seed = seed
        self.feature_names = list(feature_names)
        self.config = config
        self.prep = prep
        self.components = components
        self.calibrators: list = []  # one per statistic, in `statistics` order
        self.n_train = n_train
        self.baseline_scores: np.ndarray | None = None  # calibrated training scores in row order, set by fit
        self.calibration = "in-sample"

    # -- scoring ---------------------------------------------------------------------------------------------

    def _check(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != len(self.feature_names):
            raise ValueError(f"expected an (n, {len(self.feature_names)}) matrix, got shape {x.shape}")
        return x

    def _chunks(self, fn: Callable[[np.ndarray], T], x: np.ndarray, n_threads: int | None) -> list[T]:
        n = x.shape[0]
        step = self.config.chunk_rows
        threads = n_threads or self.config.n_threads
        slices = [slice(i, min(i + step, n)) for i in range(0, n, step)]
        if threads <= 1 or len(slices) <= 1:
            return [fn(x[s]) for s in slices]
        with blas_single_thread(), ThreadPoolExecutor(threads) as pool:
            return list(pool.map(lambda s: fn(x[s]), slices))

    def _map_chunks(self, fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, n_threads: int | None) -> np.ndarray:
        return np.concatenate(self._chunks(fn, x, n_threads), axis=0)

    @staticmethod
    def _input(comp, batch: _Batch) -> np.ndarray:
        return batch.z if comp.uses == "z" else batch.ev

    @property
    def statistics(self) -> list[tuple[int, int, str]]:
        """(component index, statistic index, name) of every calibrated statistic."""
        return [(ci, si, name) for ci, c in enumerate(self.components) for si, name in enumerate(c.stats)]

    def _raw(self, batch: _Batch) -> np.ndarray:
        return np.concatenate([comp.raw(self._input(comp, batch)) for comp in self.components], axis=1)

    def _calibrated(self, batch: _Batch) -> np.ndarray:
        """Calibrated score per statistic, (n, n_statistics)."""
        raw = self._raw(batch)
        return np.stack([cal(raw[:, i]) for i, cal in enumerate(self.calibrators)], axis=1)

    def score_components(self, x: np.ndarray, n_threads: int | None = None) -> dict[str, np.ndarray]:
        """Calibrated score of each statistic (``iforest``, ``pca_t2``, ``pca_q``, ``event``; see ``statistics``)."""
        x = self._check(x)
        names = [name for _, _, name in self.statistics]
        if x.shape[0] == 0:
            return {name: np.empty(0) for name in names}
        s = self._map_chunks(lambda xs: self._calibrated(self.prep.transform(xs)), x, n_threads)
        return {name: s[:, i] for i, name in enumerate(names)}

    def score(self, x: np.ndarray, n_threads: int | None = None) -> np.ndarray:
        """Calibrated anomaly score (``-log10`` baseline tail probability; higher = more anomalous), float64."""
        x = self._check(x)
        if x.shape[0] == 0:
            return np.empty(0)
        return self._map_chunks(lambda xs: self._calibrated(self.prep.transform(xs)).max(axis=1), x, n_threads)

    def scored(self, x: np.ndarray, n_threads: int | None = None) -> Scored:
        """``score`` that keeps the transformed rows and per-statistic scores, for ``attribution_of`` some of them."""
        x = self._check(x)
        if x.shape[0] == 0:
            return Scored(self.prep.transform(x), np.empty((0, len(self.statistics))))

        def one(xs: np.ndarray) -> Scored:
            batch = self.prep.transform(xs)
            return Scored(batch, self._calibrated(batch))

        parts = self._chunks(one, x, n_threads)
        return Scored(_Batch(np.concatenate([p.batch.z for p in parts]), np.concatenate([p.batch.ev for p in parts])),
                      np.concatenate([p.calibrated for p in parts]))

    # -- attribution -----------------------------------------------------------------------------------------

    def _columns(self, comp) -> np.ndarray:
        return self.prep.kept if comp.uses == "z" else self.prep.event_cols

    def attribution(self, x: np.ndarray) -> np.ndarray:
        """(n, p) non-negative per-feature contributions of the component that scored each row (see module doc),
        rescaled so each row sums to its calibrated score. Features no component uses get 0."""
        return self.attribution_of(self.scored(self._check(x)))

    def attribution_of(self, scored: Scored) -> np.ndarray:
        """``attribution`` of rows already scored."""
        batch, cal = scored.batch, scored.calibrated
        out = np.zeros((cal.shape[0], len(self.feature_names)), dtype=np.float32)
        if cal.shape[0] == 0:
            return out
        best = cal.max(axis=1)
        order = np.argsort(-cal, axis=1, kind="stable")
        done = np.zeros(cal.shape[0], dtype=bool)
        stats = self.statistics
        for rank in range(len(stats)):
            for k, (ci, si, _) in enumerate(stats):
                rows = np.flatnonzero((~done) & (order[:, rank] == k))
                if rows.size == 0:
                    continue
                comp = self.components[ci]
                a = comp.attribution(self._input(comp, _Batch(batch.z[rows], batch.ev[rows])), si)
                a = np.where(np.isfinite(a) & (a > 0), a, 0.0)
                tot = a.sum(axis=1)
                use = tot > 0
                r = rows[use]
                out[np.ix_(r, self._columns(comp))] = a[use] / tot[use, None] * np.maximum(best[r, None], _EPS)
                done[r] = True
        return out

    def explaining_component(self, x: np.ndarray) -> np.ndarray:
        """Name of the statistic with the highest calibrated score per row (whose attribution is returned, unless
        it attributes nothing)."""
        x = self._check(x)
        names = np.array([name for _, _, name in self.statistics], dtype=object)
        if x.shape[0] == 0:
            return names[:0]
        return names[np.argmax(self._calibrated(self.prep.transform(x)), axis=1)]

    # -- description -----------------------------------------------------------------------------------------

    @property
    def continuous_features(self) -> list[str]:
        return [self.feature_names[j] for j in self.prep.kept]

    @property
    def event_features(self) -> list[str]:
        return [self.feature_names[j] for j in self.prep.event]

    @property
    def constant_features(self) -> list[str]:
        return list(self.prep.constant_values)

    def params(self) -> dict:
        cfg = self.config
        return {
            "kind": self.kind,
            "seed": self.seed,
            "n_train": self.n_train,
            "n_features": len(self.feature_names),
            "feature_names": self.feature_names,
            "continuous_features": len(self.prep.kept),
            "event_features": self.event_features,
            "constant_features": self.prep.constant_values,
            "scaling": "standard (training mean/std, NaN -> training median), clipped",
            "clip_z": cfg.clip_z,
            "calibration": f"-log10 baseline tail probability ({self.calibration}; empirical body, GPD tail)",
            "combine": "max of calibrated statistics",
            "components": {c.name: c.params() for c in self.components},
            "statistics": {
                name: self.calibrators[i].params() for i, (_, _, name) in enumerate(self.statistics)
            },
            "config": {k: v for k, v in cfg.__dict__.items() if k not in ("n_threads", "chunk_rows")},
        }

    def __repr__(self) -> str:
        return (
            f"Detector(kind={self.kind!r}, continuous={len(self.prep.kept)}, events={len(self.prep.event)}, "
            f"guards={len(self.prep.guard)}, n_train={self.n_train})"
        )


def _fit_main(z: np.ndarray, kind: str, seed: int, cfg: DetectorConfig, cov: np.ndarray | None = None) -> list:
    components: list = []
    if z.shape[1] == 0:
        return components
    if kind in ("iforest", "ensemble"):
        components.append(_IForest(z, seed, cfg.iforest_trees, cfg.iforest_max_samples))
    if kind in ("pca", "ensemble"):
        components.append(_PCA(z, cfg.pca_variance, cfg.pca_max_components, cfg.pca_ridge, cfg.pca_combine, cov))
    return components


def fit_detector(
    train: np.ndarray,
    feature_names: Sequence[str],
    kind: DetectorKind = DEFAULT_KIND,
    seed: int = 0,
    config: DetectorConfig | None = None,
    **overrides,
) -> Detector:
    """Fit a detector on one device's baseline rows (float32 n x p, NaN allowed; columns in ``feature_names`` order,
    rows in time order -- the out-of-fold calibration deals time blocks to folds).

    ``overrides`` are ``DetectorConfig`` fields (e.g. ``iforest_trees=50``). Raises ``ValueError`` when there are too
    few rows or no feature varies in training.
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} must be one of {KINDS}")
    cfg = config or DetectorConfig()
    if overrides:
        cfg = DetectorConfig(**{**cfg.__dict__, **overrides})
    x = np.asarray(train)
    names = list(feature_names)
    if x.ndim != 2 or x.shape[1] != len(names):
        raise ValueError(f"train must be (n, {len(names)}), got shape {x.shape}")
    if len(set(names)) != len(names):
        raise ValueError("feature_names must be unique")
    if x.shape[0] < 10:
        raise ValueError(f"need at least 10 training rows, got {x.shape[0]}")
    prep = _Preprocessor.fit(x, names, cfg.clip_z, cfg.event_mode_share, cfg.constant_guard)
    if prep.kept.size == 0 and prep.event.size == 0:
        raise ValueError("no feature varies in the training rows; cannot fit a detector")
    batch = prep.transform(x)
    z = batch.z
    n = x.shape[0]
    folds = cfg.calibration_folds if (n // max(cfg.calibration_folds, 1)) >= _MIN_FOLD_ROWS else 1
    blocks = np.array_split(np.arange(n), max(folds, n // max(cfg.calibration_block_rows, 1)))
    held_out = [np.concatenate(blocks[f::folds]) for f in range(folds)] if folds >= 2 else []
    covs = _fold_covariances(z, held_out) if kind != "iforest" else None
    main = _fit_main(z, kind, seed, cfg, covs[0] if covs else None)
    components = list(main)
    if prep.event_cols.size:
        modes = _modes(batch.ev[:, : prep.event.size], prep.event_fill[prep.event.size :])
        components.append(_EventTail(batch.ev, modes, prep.event.size, cfg.event_prior, cfg.event_score))
    det = Detector(kind, seed, names, cfg, prep, components, x.shape[0])

    # Calibration scores. Main components: out-of-fold when calibration_folds >= 2 (time blocks of
    # calibration_block_rows dealt round-robin to the folds; each fold scored by components fitted on the others),
    # else in-sample. Event component: in-sample (its scores are already empirical frequencies).
    step = max(1, math.ceil(n / cfg.calibration_rows))
    rows = np.arange(0, n, step)

    def raw_of(comps: list, idx: np.ndarray) -> np.ndarray:
        return det._map_chunks(lambda zs: np.concatenate([c.raw(zs) for c in comps], axis=1), z[idx], None)

    n_main = sum(len(c.stats) for c in main)
    if folds >= 2 and main:
        raw_main = np.empty((rows.size, n_main))
        pos = np.full(n, -1, dtype=np.int64)
        pos[rows] = np.arange(rows.size)
        for f_i, held in enumerate(held_out):
            rest = np.ones(n, dtype=bool)
            rest[held] = False
            held = held[pos[held] >= 0]
            fold = _fit_main(z[rest], kind, seed, cfg, covs[1][f_i] if covs else None)
            raw_main[pos[held]] = raw_of(fold, held)
        det.calibration = "out-of-fold"
    elif main:
        raw_main = raw_of(main, rows)
        det.calibration = "in-sample"
    else:
        raw_main = np.zeros((rows.size, 0))
    raw_cols = [raw_main[:, i] for i in range(n_main)]
    if len(components) > len(main):
        raw_cols.append(components[-1].raw(batch.ev[rows])[:, 0])
    det.calibrators = [_TailCalibrator.fit(r) for r in raw_cols[:n_main]]
    if len(components) > len(main):
        ev_comp = components[-1]
        det.calibrators.append(_Identity() if ev_comp.mode == "excess" else _TailCalibrator.fit(raw_cols[-1]))
    det.baseline_scores = np.max(
        np.stack([cal(r) for cal, r in zip(det.calibrators, raw_cols)], axis=1), axis=1
    ).astype(np.float32)
    return det


def _fold_covariances(z: np.ndarray, held_out: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]] | None:
    """``np.cov`` of all rows and of each fold's training rows (all but its held-out ones), from the Gram matrix
    and column sums of each held-out set: the out-of-fold fits need no pass over the rows of their own."""
    if not held_out or z.shape[1] == 0:
        return None
    parts = []
    for rows in held_out:
        zh = z[rows].astype(np.float64)
        parts.append((zh.T @ zh, zh.sum(axis=0), rows.size))

    def cov(gram: np.ndarray, total: np.ndarray, m: int) -> np.ndarray:
        return (gram - np.outer(total, total) / m) / (m - 1)

    gram, total = sum(g for g, _, _ in parts), sum(t for _, t, _ in parts)
    n = sum(m for _, _, m in parts)
    return cov(gram, total, n), [cov(gram - g, total - t, n - m) for g, t, m in parts]


def _modes(ev: np.ndarray, guard_values: np.ndarray) -> np.ndarray:
    """Most frequent value of each event column (ties: the smallest), then the guards' constants."""
    out = []
    for j in range(ev.shape[1]):
        vals, counts = np.unique(ev[:, j], return_counts=True)
        out.append(vals[np.argmax(counts)])
    return np.concatenate([np.asarray(out, dtype=np.float64), guard_values.astype(np.float64)])
