import json
import pickle

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from itap_assets.core.detector import DEFAULT_KIND, Detector, fit_detector

P = 12
NAMES = [f"f{j}" for j in range(P)] + ["count", "flat"]


def _data(n: int, rng: np.random.Generator) -> np.ndarray:
    """Correlated sensors (3 latent drivers), a mostly-zero counter and a constant column; a few NULLs."""
    load = rng.normal(size=(3, P)).astype(np.float32)
    x = rng.normal(size=(n, 3)).astype(np.float32) @ load + 0.2 * rng.normal(size=(n, P)).astype(np.float32)
    count = (rng.random(n) < 0.01).astype(np.float32)
    flat = np.full(n, 7.0, dtype=np.float32)
    out = np.column_stack([x, count, flat]).astype(np.float32)
    out[rng.random(out.shape) < 0.002] = np.nan
    return out


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    both = _data(6_000, rng)
    train, test = both[:4_000], both[4_000:].copy()
    labels = np.zeros(len(test), dtype=bool)
    labels[:100] = True
    test[:100, 3] += 3.0 * np.nanstd(train[:, 3])  # breaks the correlation of f3 with the others
    return train, test, labels


@pytest.fixture(scope="module", params=["pca", "iforest", "ensemble"])
def fitted(request, data):
    train, _, _ = data
    return fit_detector(train, NAMES, kind=request.param, seed=3, iforest_trees=50)


def test_default_kind_is_pca():
    assert DEFAULT_KIND == "pca"


def test_scores_rank_injected_anomalies(fitted, data):
    _, test, labels = data
    s = fitted.score(test)
    assert s.shape == (len(test),) and np.all(np.isfinite(s))
    auc = roc_auc_score(labels, s)
    # IsolationForest is weak on correlation-breaking anomalies (the reason PCA is the default)
    assert auc > (0.99 if fitted.kind != "iforest" else 0.7)


def test_attribution_follows_the_injected_feature(fitted, data):
    _, test, _ = data
    a = fitted.attribution(test[:100])
    assert a.shape == (100, len(NAMES)) and np.all(a >= 0)
    hits = (a.argmax(axis=1) == 3).mean()
    assert hits > (0.9 if fitted.kind != "iforest" else 0.6)
    # rows sum to the calibrated score of the explaining statistic
    np.testing.assert_allclose(a.sum(axis=1), fitted.score(test[:100]), rtol=1e-6)
    assert a[:, NAMES.index("flat")].max() == 0.0  # constant in training and unchanged


def test_rows_scored_once_are_attributed_without_scoring_them_again(fitted, data):
    _, test, _ = data
    scored = fitted.scored(test)
    np.testing.assert_array_equal(scored.score, fitted.score(test))
    rows = np.flatnonzero(scored.score > np.quantile(scored.score, 0.9))
    # evidence statistics depend on the rows before: attributing a subset needs the scores of the whole sequence
    np.testing.assert_array_equal(fitted.attribution_of(scored.take(rows)), fitted.attribution(test)[rows])


def test_baseline_is_calibrated_out_of_fold(data):
    train, test, labels = data
    det = fit_detector(train, NAMES, kind="pca", evidence_rows=0)
    assert det.calibration.startswith("out-of-fold")
    b = det.baseline_scores
    assert b.shape == (len(train),)
    # on stationary data, new fault-free rows are as probable as the held-out baseline rows promised
    normal = det.score(test[~labels])
    for level in (1.0, 2.0):
        assert (normal > level).mean() == pytest.approx((b > level).mean(), abs=0.02)
    inside = fit_detector(train, NAMES, kind="pca", calibration_folds=1, evidence_rows=0)
    assert inside.calibration == "in-sample"


def test_scores_grow_without_bound_with_the_deviation(data):
    train, test, _ = data
    det = fit_detector(train, NAMES, kind="pca")
    sd = np.nanstd(train[:, 3])
    sizes = np.array([2, 5, 10, 20, 40, 100, 1000])
    x = np.repeat(test[500:501], sizes.size, axis=0)
    x[:, 3] += sizes * sd
    s = np.array([det.score(row[None, :])[0] for row in x])  # one row each: no evidence carried over
    assert np.all(np.diff(s) > 0) and s[-1] > 100


def test_evidence_finds_a_small_persistent_shift(data):
    train, test, _ = data
    det = fit_detector(train, NAMES, kind="pca")
    names = [name for _, _, name in det.statistics]
    assert "mahalanobis_evidence" in names and "pca_t2_evidence" not in names and "pca_q_evidence" not in names
    x = test[1000:1400].copy()
    x[200:, 3] += 1.0 * np.nanstd(train[:, 3])  # one sigma on one sensor: hardly any single point is rare
    scored = det.scored(x)
    point = scored.calibrated[:, : len(det.point_statistics)].max(axis=1)
    level = np.quantile(det.baseline_scores, 0.999)
    assert (point[250:] > level).mean() < 0.6 < (scored.score[250:] > level).mean()
    assert (scored.score[:200] > level).mean() < 0.02


def test_persistent_features_are_left_out_of_pca_only():
    rng = np.random.default_rng(1)
    n = 400
    fast = rng.normal(size=(n, 3))
    slow = np.cumsum(rng.normal(size=n)) * 0.1  # a random walk: a handful of independent values in 400 rows
    x = np.column_stack([fast, slow]).astype(np.float32)
    det = fit_detector(x, ["a", "b", "c", "walk"], kind="pca")
    assert set(det.params()["persistent_features"]) == {"walk"}
    pca, maha = det.components[:2]
    assert pca.columns.tolist() == [0, 1, 2] and det.continuous_features == ["a", "b", "c", "walk"]
    far = x[-1:].copy()
    far[0, 3] += 50 * x[:, 3].std()
    assert pca.raw(det.prep.scale_continuous(far))[0, 1] < 10 < maha.raw(det.prep.scale_continuous(far))[0, 0]


def test_evidence_is_explained_by_the_rows_of_its_window(data):
    train, test, _ = data
    det = fit_detector(train, NAMES, kind="pca")
    x = test[1000:1400].copy()
    x[200:, 3] += 1.0 * np.nanstd(train[:, 3])
    scored = det.scored(x)
    evidence = {name: k for k, (_, _, name) in enumerate(det.statistics) if name.endswith("_evidence")}
    rows = np.flatnonzero(np.isin(scored.calibrated.argmax(axis=1), list(evidence.values())))
    rows = rows[rows >= 230]
    assert rows.size > 50
    a = det.attribution_of(scored.take(rows))
    assert (a.argmax(axis=1) == 3).mean() > 0.9


def test_preprocessing_roles_and_params(data):
    train, _, _ = data
    det = fit_detector(train, NAMES, kind="ensemble", iforest_trees=20)
    assert det.constant_features == ["flat"]
    assert det.event_features == ["count"]
    assert len(det.continuous_features) == P
    params = det.params()
    json.dumps(params)  # JSON-able
    assert params["constant_features"] == {"flat": 7.0}
    assert set(params["statistics"]) == {"iforest", "pca_t2", "pca_q", "mahalanobis", "event", "iforest_evidence",
                                         "mahalanobis_evidence"}
    assert params["components"]["pca"]["components"] == 3  # three latent drivers above the noise edge


def test_event_and_guard_features_flag_novelty(data):
    train, test, _ = data
    det = fit_detector(train, NAMES, kind="pca")
    x = test[200:210].copy()
    x[:, NAMES.index("count")] = 40.0  # far beyond any training count
    x[5:, NAMES.index("flat")] = 50.0  # a feature that never moved in training
    s = det.score(x)
    assert np.all(s > 10)
    a = det.attribution(x)
    assert set(a.argmax(axis=1)) <= {NAMES.index("count"), NAMES.index("flat")}
    event = [name for _, _, name in det.statistics].index("event")
    assert np.all(det.scored(x).calibrated.argmax(axis=1) == event)
    # inside the training range an event feature scores nothing
    y = test[200:210].copy()
    y[:, NAMES.index("count")] = 1.0
    assert det.scored(y).calibrated[:, event].max() == 0.0


def test_missing_values_are_imputed(fitted, data):
    _, test, _ = data
    x = test[:5].copy()
    x[0, :] = np.nan
    x[1, :3] = np.nan
    s = fitted.score(x)
    assert np.all(np.isfinite(s))
    assert np.all(np.isfinite(fitted.attribution(x)))


def test_pickle_roundtrip_and_threads_agree(fitted, data):
    _, test, _ = data
    clone = pickle.loads(pickle.dumps(fitted))
    assert isinstance(clone, Detector)
    np.testing.assert_array_equal(clone.score(test), fitted.score(test))
    np.testing.assert_allclose(fitted.score(test, n_threads=1), fitted.score(test, n_threads=2))
    np.testing.assert_allclose(clone.attribution(test[:20]), fitted.attribution(test[:20]))


def test_same_seed_same_model(data):
    train, test, _ = data
    a = fit_detector(train, NAMES, kind="iforest", seed=5, iforest_trees=20).score(test)
    b = fit_detector(train, NAMES, kind="iforest", seed=5, iforest_trees=20).score(test)
    np.testing.assert_array_equal(a, b)


def test_pca_attribution_is_an_exact_decomposition(data):
    train, test, _ = data
    det = fit_detector(train, NAMES, kind="pca")
    pca = det.components[0]
    z = det.prep.scale_continuous(test[:200])
    t2, q = pca._stats(z)
    np.testing.assert_allclose(pca.attribution(z, 0).sum(axis=1), t2 / pca.t2_norm, rtol=1e-4)
    np.testing.assert_allclose((pca.attribution(z, 1) * pca.residual_share).sum(axis=1), q, rtol=1e-4)
    raw = pca.raw(z)
    np.testing.assert_allclose(raw[:, 0], t2 / pca.t2_norm)
    np.testing.assert_allclose(raw[:, 1], q / pca.q_norm)
    maha = det.components[1]
    np.testing.assert_allclose(maha.attribution(z).sum(axis=1), maha.raw(z)[:, 0], rtol=1e-3)


def test_iforest_matches_sklearn_and_path_credit_telescopes(data):
    train, test, _ = data
    det = fit_detector(train, NAMES, kind="iforest", iforest_trees=30, seed=1)
    forest = det.components[0]
    z = det.prep.scale_continuous(test[:300])
    np.testing.assert_allclose(forest.raw(z)[:, 0], -forest.model.score_samples(z), rtol=1e-12)
    mean_h = -np.log2(forest.raw(z)[:, 0]) * forest.c_psi
    np.testing.assert_allclose(forest.path_credit(z).sum(axis=1), forest.c_psi - mean_h, atol=1e-9)


def test_input_validation(data):
    train, test, _ = data
    with pytest.raises(ValueError):
        fit_detector(train, NAMES, kind="lof")
    with pytest.raises(ValueError):
        fit_detector(train[:, :3], NAMES)
    with pytest.raises(ValueError):
        fit_detector(train[:5], NAMES)
    with pytest.raises(ValueError):
        fit_detector(train, NAMES[:-1] + ["f0"])
    with pytest.raises(ValueError):
        fit_detector(np.full((50, 3), np.nan, dtype=np.float32), ["a", "b", "c"])
    flat = fit_detector(np.ones((50, 3), dtype=np.float32), ["a", "b", "c"])  # a flat line: only guards
    assert flat.score(np.ones((3, 3), dtype=np.float32)).max() == 0.0
    assert flat.score(np.full((1, 3), 2.0, dtype=np.float32))[0] > 0
    det = fit_detector(train, NAMES, kind="pca")
    with pytest.raises(ValueError):
        det.score(test[:, :3])
    assert det.score(test[:0]).shape == (0,)
    assert det.attribution(test[:0]).shape == (0, len(NAMES))


def test_chain_on_simulated_fleet():
    """simulator -> features -> detector -> label-free threshold -> explain -> metrics on 4 demo devices."""
    from itap_assets.core import features
    from itap_assets.core import simulator
    from itap_assets.core.simulator import SIMULATOR_FAULT_TAGS
    import polars as pl

    from itap_assets.core.explain import explain_points, feature_family_map
    from itap_assets.core.metrics import detection_metrics, root_cause_accuracy
    from itap_assets.core.scoring import smoothed_threshold
    from itap_assets.core.thresholds import k_of_n
    from itap_assets.settings import DEFAULT_SENSORS, ModelSettings, SimulationSettings

    sensor_families = {k: v.family for k, v in DEFAULT_SENSORS.items()}
    sim = SimulationSettings(devices=4, days=2, seed=7)
    tele = simulator.simulate_fleet(sim)
    specs = features.feature_registry(sensor_families)
    names = [s.name for s in specs]
    feats = features.device_day_features(tele, sensor_families).with_columns(
        tele["fault_tag"], tele["fault_id"]
    )
    fam = feature_family_map(specs)
    scored, explained = [], []
    for dev in feats["device_id"].unique().sort():
        f = feats.filter(pl.col("device_id") == dev)
        x = f.select(names).to_numpy().astype(np.float32)
        train = ((f["day"] == sim.start) & ~f["warmup"]).to_numpy()
        test = (f["day"] != sim.start).to_numpy()
        det = fit_detector(x[train], names, seed=0)
        thr = smoothed_threshold(det.baseline_scores, ModelSettings())["threshold"]
        s = det.score(x[test])
        flag = k_of_n(s > thr, 2, 3)
        ft = f.filter(pl.Series(test)).select("device_id", "ts", "fault_tag", "fault_id")
        scored.append(ft.with_columns(score=s, is_anomaly=flag, in_training=False))
        idx = np.flatnonzero(flag)
        explained.append(ft[idx].hstack(explain_points(det.attribution(x[test][idx]), names, fam)))
    m = detection_metrics(pl.concat(scored), post_fault_grace_s=1800, tags=SIMULATOR_FAULT_TAGS)["overall"]
    assert m["critical_episode_recall"] == 1.0
    assert m["false_alarm_rate_excl_post_fault"] < 0.005
    assert m["roc_auc"] > 0.95
    rc = root_cause_accuracy(pl.concat(explained), tags=SIMULATOR_FAULT_TAGS)
    # 0.88: every bearing, overheat and power-spike point is blamed right; of a dropout's points 0.70 are blamed on
    # DataQuality (the rest, once the missing streak is at its cap, on the dropped sensor's rolling features);
    # every episode is blamed right
    assert rc["overall"]["accuracy"] >= 0.85 and rc["overall"]["episode_accuracy"] == 1.0


def test_ledoit_wolf_from_summed_moments_is_sklearns():
    from sklearn.covariance import LedoitWolf

    from itap_assets.core.components import Moments

    rng = np.random.default_rng(4)
    x = rng.normal(size=(900, 7)) @ rng.normal(size=(7, 7)) + 3.0
    a, b = Moments.of(x[:300]), Moments.of(x[300:])
    cov, shrinkage = ((a + b) - a).ledoit_wolf()  # the out-of-fold way: all blocks' sums minus one block's
    lw = LedoitWolf().fit(x[300:])
    assert shrinkage == pytest.approx(lw.shrinkage_, rel=1e-9)
    np.testing.assert_allclose(cov, lw.covariance_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(Moments.of(x).covariance(), np.cov(x, rowvar=False), rtol=1e-9)
