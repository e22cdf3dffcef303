"""The models behind a detector: each turns scaled rows into raw statistics (higher = more anomalous) and splits
a statistic into non-negative per-feature contributions (attribution). Calibration is not their concern
(``calibration.py``); ``detector.py`` combines them.

``PCA``          on the features with enough effective baseline samples (``preprocessing``): Hotelling's T2 (unusual operating point inside the model plane) and Q/SPE (squared residual =
                 broken correlations between sensors). Capacity: the components whose eigenvalue (the features are
                 standardised, so the covariance is about the correlation matrix) exceeds the Marchenko-Pastur
                 upper edge ``(1 + sqrt(p / n_eff))**2`` -- the largest eigenvalue that pure noise of ``n_eff``
                 independent samples would produce, with ``n_eff`` the baseline's effective sample count (not its
                 row count: autocorrelated rows are worth fewer). A fixed share of variance kept ~45 of 84
                 components fitted on one day and memorised the baseline.
``Mahalanobis``  ``D2 = z' S^-1 z`` with the Ledoit-Wolf shrinkage covariance ``S`` (scikit-learn's estimator,
                 computed from summed moments, ``Moments``, so out-of-fold fits need no pass of their own): every
                 direction, small-variance ones included, with a ridge chosen from the data. Small shifts across
                 many correlated sensors (Tennessee Eastman faults 5, 16, 19) live in the small-variance directions
                 that T2 drops and Q lumps together with noise.
``IForest``      StandardScaler + IsolationForest (the predecessor's baseline), ``2 ** (-E[h] / c(psi))``.
``EventTail``    event-like and guard features, see its docstring.

Attribution: ``Q``: reconstruction-based ``e_j**2 / (1 - ||P_j||**2)``; ``T2``: complete-decomposition contributions ``(z M)_j**2`` with ``M`` the
symmetric inverse square root of its covariance (Alcala & Qin 2011), non-negative and summing to the statistic;
``D2``: the partial decomposition ``z_j (S^-1 z)_j`` (sums to D2, negative terms clipped); ``iforest``: path-based (per tree the isolation deficit ``c(psi) - h(x)`` telescopes over the edges of
the row's path, each edge charged to the feature its parent split on); ``event``: each feature's own excess.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from sklearn.ensemble import IsolationForest

from itap_assets.core.rowwise import row_products

NORMALISER_QUANTILE = 0.99
_EPS = 1e-12


def avg_path_length(n: np.ndarray) -> np.ndarray:
    """c(n) of Liu et al. (same as sklearn's _average_path_length)."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    out[n == 2] = 1.0
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


class IForest:
    name = "iforest"
    uses = "z"
    stats = ("iforest",)

    def __init__(self, z: np.ndarray, seed: int, trees: int, max_samples: int) -> None:
        self.model = IsolationForest(
            n_estimators=trees, max_samples=min(max_samples, z.shape[0]), random_state=seed, n_jobs=1
        ).fit(z)
        self.psi = int(self.model.max_samples_)
        self.c_psi = float(avg_path_length(np.array([self.psi]))[0])
        self.trees = [est.tree_ for est in self.model.estimators_]
        self.features = [np.asarray(f) for f in self.model.estimators_features_]
        self.full = [bool(f.size == z.shape[1] and np.all(f == np.arange(z.shape[1]))) for f in self.features]
        # h(leaf) = depth(leaf) + c(n_leaf); sklearn's node depths are 1-based.
        self.leaf_h = [
            (t.compute_node_depths() - 1.0 + avg_path_length(t.n_node_samples)).astype(np.float64)
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
                c = avg_path_length(tree.n_node_samples)
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




def marchenko_pastur_components(eigenvalues: np.ndarray, p: int, n_effective: float) -> int:
    """Components whose eigenvalue exceeds the noise edge ``(1 + sqrt(p / n_eff))**2``; at least 1, at most p - 1."""
    edge = (1.0 + math.sqrt(p / max(n_effective, 1.0))) ** 2
    return int(np.clip((np.asarray(eigenvalues) > edge).sum(), 1, max(1, p - 1)))


def _inverse_sqrt(lam: np.ndarray, vec: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray((vec * lam**-0.5) @ vec.T, dtype=np.float32)


def _quantile_norm(values: np.ndarray) -> float:
    return max(float(np.quantile(values, NORMALISER_QUANTILE)), _EPS)


class PCA:
    name = "pca"
    uses = "z"
    stats = ("pca_t2", "pca_q")

    def __init__(self, z: np.ndarray, columns: np.ndarray, n_effective: float, cov: np.ndarray | None = None) -> None:
        self.columns = np.asarray(columns, dtype=np.int64)  # positions in z: the features PCA can learn
        self.all_columns = self.columns.size == z.shape[1]
        z = self._cols(z)
        p = z.shape[1]
        if cov is None:
            cov = np.cov(z, rowvar=False, dtype=np.float64).reshape(p, p)
        lam, vec = np.linalg.eigh(cov)
        order = np.argsort(lam)[::-1]
        lam, vec = np.maximum(lam[order], 0.0), vec[:, order]
        k = marchenko_pastur_components(lam, p, n_effective)
        total = lam.sum()
        lam_k = np.maximum(lam[:k], _EPS + 1e-6 * lam[0])
        self.k = k
        self.explained = float(lam[:k].sum() / total) if total > 0 else 1.0
        self.P = np.ascontiguousarray(vec[:, :k], dtype=np.float32)
        self.inv_lam = (1.0 / lam_k).astype(np.float32)
        self.W = _inverse_sqrt(lam_k, vec[:, :k])
        # per feature, the share of a unit deviation that stays in the residual: 1 - ||P_j||^2
        self.residual_share = np.maximum(1.0 - (self.P * self.P).sum(axis=1), 1e-3).astype(np.float32)
        t2, q = self._stats(z[:: max(1, z.shape[0] // 20_000)])
        self.t2_norm = _quantile_norm(t2)
        self.q_norm = max(_quantile_norm(q), 1e-9 * float(np.mean(t2) + 1.0))

    def _cols(self, z: np.ndarray) -> np.ndarray:
        return z if self.all_columns else np.ascontiguousarray(z[:, self.columns])

    def _scores_and_residual(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The model-plane scores ``t`` and the residual ``e = z - t P'`` of rows in the PCA's own columns."""
        t = row_products(z, self.P)
        return t, z - row_products(t, self.P.T)

    def _stats(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """T2 and Q of rows given in the PCA's own columns."""
        t, e = self._scores_and_residual(z)
        t2 = np.einsum("ij,ij,j->i", t, t, self.inv_lam, dtype=np.float64, optimize=False)
        q = np.einsum("ij,ij->i", e, e, dtype=np.float64)
        return t2, q

    def raw(self, z: np.ndarray) -> np.ndarray:
        t2, q = self._stats(self._cols(z))
        return np.stack([t2 / self.t2_norm, q / self.q_norm], axis=1)

    def attribution(self, z: np.ndarray, stat: int = 0) -> np.ndarray:
        """T2: ``(z W)_j**2 / t2_norm``; Q: reconstruction-based contributions ``e_j**2 / (1 - ||P_j||**2)``
        (Alcala & Qin 2009: the plain ``e_j**2`` smears a fault of a feature the model plane explains well onto the
        features correlated with it); 0 for the columns PCA does not use. float32."""
        zc = self._cols(z)
        if stat == 0:
            w = row_products(zc, self.W)
            parts = w * w / np.float32(self.t2_norm)
        else:
            _, e = self._scores_and_residual(zc)
            parts = e * e / self.residual_share  # reconstruction-based (not smeared onto correlated features)
        if self.all_columns:
            return parts
        out = np.zeros(z.shape, dtype=np.float32)
        out[:, self.columns] = parts
        return out

    def params(self) -> dict:
        return {"components": self.k, "features": int(self.columns.size), "explained_variance": self.explained,
                "t2_normaliser_q99": self.t2_norm,
                "q_normaliser_q99": self.q_norm, "capacity": "Marchenko-Pastur edge at the effective sample count"}


@dataclass(frozen=True)
class Moments:
    """Sums over a set of rows from which a covariance and its Ledoit-Wolf shrinkage follow: the out-of-fold fits
    take the moments of all rows minus their held-out block's, with no pass over the rows of their own."""

    n: int
    s1: np.ndarray  # sum of x
    gram: np.ndarray  # sum of x x'
    r2: float  # sum of ||x||^2
    r2x: np.ndarray  # sum of ||x||^2 x
    r4: float  # sum of ||x||^4

    @staticmethod
    def of(z: np.ndarray) -> Moments:
        x = np.asarray(z, dtype=np.float64)
        sq = np.einsum("ij,ij->i", x, x)
        return Moments(x.shape[0], x.sum(axis=0), x.T @ x, float(sq.sum()), sq @ x, float(sq @ sq))

    def __add__(self, o: Moments) -> Moments:
        return Moments(self.n + o.n, self.s1 + o.s1, self.gram + o.gram, self.r2 + o.r2, self.r2x + o.r2x,
                       self.r4 + o.r4)

    def __sub__(self, o: Moments) -> Moments:
        return Moments(self.n - o.n, self.s1 - o.s1, self.gram - o.gram, self.r2 - o.r2, self.r2x - o.r2x,
                       self.r4 - o.r4)

    @property
    def mean(self) -> np.ndarray:
        return self.s1 / self.n

    def scatter(self) -> np.ndarray:
        """sum of (x - mean)(x - mean)'"""
        m = self.mean
        return self.gram - self.n * np.outer(m, m)

    def covariance(self) -> np.ndarray:
        """As ``np.cov(rows, rowvar=False)`` (ddof 1)."""
        return self.scatter() / (self.n - 1)

    def ledoit_wolf(self) -> tuple[np.ndarray, float]:
        """(covariance, shrinkage) exactly as ``sklearn.covariance.LedoitWolf().fit(rows)``, from the sums."""
        n, m = self.n, self.mean
        p = m.size
        c = self.scatter()
        mm = float(m @ m)
        centred_r4 = (self.r4 - 4.0 * float(m @ self.r2x) + 2.0 * mm * self.r2 + 4.0 * float(m @ self.gram @ m)
                      - 4.0 * mm * float(m @ self.s1) + n * mm * mm)  # sum of ||x - mean||^4
        emp = c / n
        trace = float(np.trace(emp))
        mu = trace / p
        delta_ = float((c * c).sum()) / n**2
        beta = (centred_r4 / n - delta_) / (p * n)
        delta = (delta_ - 2.0 * mu * trace + p * mu * mu) / p
        beta = min(beta, delta)
        shrinkage = 0.0 if beta == 0 else beta / delta
        cov = (1.0 - shrinkage) * emp
        cov.flat[:: p + 1] += shrinkage * mu
        return cov, shrinkage


class Mahalanobis:
    name = "mahalanobis"
    uses = "z"
    stats = ("mahalanobis",)

    def __init__(self, z: np.ndarray, moments: Moments | None = None) -> None:
        """``moments``: of the rows ``z`` (computed when not given); ``z`` itself only sets the normaliser."""
        moments = moments or Moments.of(z)
        cov, self.shrinkage = moments.ledoit_wolf()
        lam, vec = np.linalg.eigh(cov)
        lam = np.maximum(lam, _EPS + 1e-9 * max(float(lam.max()), 0.0))
        self.location = moments.mean.astype(np.float32)
        self.W = _inverse_sqrt(lam, vec)
        self.precision = np.ascontiguousarray(self.W @ self.W, dtype=np.float32)
        d2 = self._d2(z[:: max(1, z.shape[0] // 20_000)])
        self.norm = _quantile_norm(d2)

    def _whitened(self, z: np.ndarray) -> np.ndarray:
        return row_products(z - self.location, self.W)

    def _d2(self, z: np.ndarray) -> np.ndarray:
        w = self._whitened(z)
        return np.einsum("ij,ij->i", w, w, dtype=np.float64)

    def raw(self, z: np.ndarray) -> np.ndarray:
        return (self._d2(z) / self.norm)[:, None]

    def attribution(self, z: np.ndarray, stat: int = 0) -> np.ndarray:
        """Partial decomposition ``d_j (S^-1 d)_j`` (sums to D2; negative terms, features that pull the row back
        towards normal, are clipped by the caller): unlike the complete decomposition it does not smear a
        deviation of one sensor over the sensors correlated with it."""
        d = z - self.location
        return d * row_products(d, self.precision) / np.float32(self.norm)

    def params(self) -> dict:
        return {"covariance": "Ledoit-Wolf shrinkage", "shrinkage": self.shrinkage, "d2_normaliser_q99": self.norm}


class EventTail:
    """Event-like features (a dominant value in training: counters, "time since" caps, flags, discrete spectra) and
    features that were constant in training ("guards"). Per feature the distance from the training mode
    ``d_j = |x_j - mode_j|``; beyond the largest training distance ``d_max`` an exponential tail with the mean
    non-zero training distance ``s_j`` as scale (``max(|constant|, 1)`` for a guard) gives
    ``-log10 P(D > d | D > d_max) = (d - d_max) / s_j / ln 10``; inside the training range the score is 0: rarity
    inside the range (a sporadic missing sample, a state change) is seen in every baseline and only produces false
    alarms. The score already is a tail probability (not re-calibrated). Raw score = max over features;
    attribution = the per-feature scores.
    """

    name = "event"
    uses = "ev"
    stats = ("event",)

    def __init__(self, ev: np.ndarray, modes: np.ndarray, n_event: int) -> None:
        e = ev.shape[1]
        self.modes = modes.astype(np.float64)
        self.n_event = n_event
        self.d_max = np.zeros(e)
        self.s = np.ones(e)
        for j in range(e):
            if j >= n_event:  # guard: never varied in training
                self.s[j] = max(abs(self.modes[j]), 1.0)
                continue
            d = np.abs(ev[:, j] - self.modes[j])
            self.d_max[j] = d.max() if d.size else 0.0
            nz = d[d > 0]
            self.s[j] = float(nz.mean()) if nz.size else 1.0

    def per_feature(self, ev: np.ndarray) -> np.ndarray:
        d = np.abs(ev - self.modes)
        d -= self.d_max
        np.maximum(d, 0.0, out=d)
        d *= 1.0 / (self.s * math.log(10.0))
        return d

    def raw(self, ev: np.ndarray) -> np.ndarray:
        if ev.shape[1] == 0:
            return np.zeros((ev.shape[0], 1))
        return self.per_feature(ev).max(axis=1)[:, None]

    def attribution(self, ev: np.ndarray, stat: int = 0) -> np.ndarray:
        return self.per_feature(ev)

    def params(self) -> dict:
        return {"mode": "excess beyond the training range", "event_features": self.n_event,
                "guard_features": len(self.modes) - self.n_event}


def modes_of(ev: np.ndarray, guard_values: np.ndarray) -> np.ndarray:
    """Most frequent value of each event column (ties: the smallest), then the guards' constants."""
    out = []
    for j in range(ev.shape[1]):
        vals, counts = np.unique(ev[:, j], return_counts=True)
        out.append(vals[np.argmax(counts)])
    return np.concatenate([np.asarray(out, dtype=np.float64), guard_values.astype(np.float64)])
