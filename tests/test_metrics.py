"""FID, precision/recall, class fidelity, PSNR/SSIM and codebook metrics."""
import math
import warnings

import numpy as np
import pytest
import scipy.linalg
import scipy.spatial.distance
import scipy.stats

from maskgit_jax.metrics import classifier
from maskgit_jax.metrics import codebook
from maskgit_jax.metrics import distances
from maskgit_jax.metrics import fid
from maskgit_jax.metrics import prdc
from maskgit_jax.metrics import reconstruction
from maskgit_jax.metrics import reference


def _random_cov(rng, d, scale=1.0):
  a = rng.normal(size=(d, d))
  return scale * (a @ a.T / d + 0.1 * np.eye(d))


def _reference_frechet(mu1, s1, mu2, s2):
  """Closed form via symmetric eigendecompositions (no sqrtm of a product):
  tr (S1 S2)^(1/2) = tr (S1^(1/2) S2 S1^(1/2))^(1/2)."""
  w, v = scipy.linalg.eigh(s1)
  root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
  inner = scipy.linalg.eigvalsh(root1 @ s2 @ root1)
  tr_covmean = np.sum(np.sqrt(np.clip(inner, 0, None)))
  return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
               - 2 * tr_covmean)


def _nuclear_norm_frechet(mu1, s1, mu2, s2):
  """tr (S1 S2)^(1/2) = sum of singular values of F2^T F1 (F F^T = S, from
  eigh with the eigenvalues under the numerical rank tolerance dropped):
  singular values carry errors ~eps |F2^T F1| instead of the
  sqrt(eps |A|) that eigenvalues near 0 get under a square root."""
  def factor(s):
    w, v = scipy.linalg.eigh(s)
    keep = w > w[-1] * len(w) * np.finfo(float).eps
    return v[:, keep] * np.sqrt(w[keep])
  tr_covmean = np.sum(scipy.linalg.svdvals(factor(s2).T @ factor(s1)))
  return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
               - 2 * tr_covmean)


# ----------------------------------------------------------------------------
# FID.


def test_fid_of_a_set_against_itself_is_zero():
  x = np.random.RandomState(0).normal(size=(400, 32)) * 3 + 1
  assert abs(fid.fid_from_features(x, x)) < 1e-8
  # Rank-deficient covariance (fewer samples than dims): exact for eigh,
  # the eps path (if sqrtm flags it) for sqrtm.
  y = np.random.RandomState(1).normal(size=(10, 48))
  assert abs(fid.fid_from_features(y, y)) < 1e-6
  assert abs(fid.fid_from_features(y, y, method="sqrtm")) < 1e-3


def test_fid_matches_reference_on_random_features():
  rng = np.random.RandomState(2)
  a = rng.normal(size=(300, 24)) @ rng.normal(size=(24, 24)) + 0.5
  b = rng.gamma(2.0, size=(250, 24)) @ rng.normal(size=(24, 24))
  mu1, s1 = a.mean(0), np.cov(a, rowvar=False)
  mu2, s2 = b.mean(0), np.cov(b, rowvar=False)
  expected = _reference_frechet(mu1, s1, mu2, s2)
  assert fid.fid_from_features(a, b) == pytest.approx(expected, rel=1e-9)
  got_mu, got_sigma = fid.compute_statistics(a)
  np.testing.assert_allclose(got_mu, a.mean(axis=0), rtol=1e-12)
  np.testing.assert_allclose(got_sigma, (a - mu1).T @ (a - mu1) / 299,
                             rtol=1e-10)


def test_frechet_distance_closed_forms():
  # Diagonal covariances: |mu1 - mu2|^2 + sum (std1 - std2)^2.
  mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
  std1, std2 = np.array([1.0, 2.0, 0.5]), np.array([3.0, 2.0, 1.5])
  got = fid.frechet_distance(mu1, np.diag(std1 ** 2), mu2, np.diag(std2 ** 2))
  assert got == pytest.approx(5.0 + 4.0 + 0.0 + 1.0, rel=1e-12)
  # Full covariances against the eigen-based closed form.
  rng = np.random.RandomState(3)
  s1, s2 = _random_cov(rng, 6), _random_cov(rng, 6, 4.0)
  m1, m2 = rng.normal(size=6), rng.normal(size=6)
  assert fid.frechet_distance(m1, s1, m2, s2) == pytest.approx(
      _reference_frechet(m1, s1, m2, s2), rel=1e-10)


def test_fid_of_large_gaussian_samples_approaches_closed_form():
  rng = np.random.RandomState(4)
  d = 4
  mu1, mu2 = np.zeros(d), np.array([1.0, -0.5, 0.0, 2.0])
  s1, s2 = _random_cov(rng, d), _random_cov(rng, d, 2.0)
  x = rng.multivariate_normal(mu1, s1, size=100_000)
  y = rng.multivariate_normal(mu2, s2, size=100_000)
  exact = _reference_frechet(mu1, s1, mu2, s2)
  assert exact > 3
  assert fid.fid_from_features(x, y) == pytest.approx(exact, abs=0.05)


def test_fid_near_singular_uses_eps_offset_and_matches_reference():
  # Dead (constant) feature dimensions make both covariances exactly
  # singular; sqrtm flags that, and the eps * I offset is applied (the
  # sqrtm route, pytorch-fid's protocol). The eigh route needs no offset.
  rng = np.random.RandomState(5)
  a = rng.normal(size=(200, 8))
  b = rng.normal(size=(200, 8)) * 1.5 + 0.2
  a[:, 6:], b[:, 6:] = 0.0, 1.0
  mu1, s1 = fid.compute_statistics(a)
  mu2, s2 = fid.compute_statistics(b)
  eps = 1e-2                         # Large, so that the offset is visible.
  with warnings.catch_warnings():
    warnings.simplefilter("error")   # No LinAlgWarning escapes.
    got = fid.frechet_distance(mu1, s1, mu2, s2, eps=eps, method="sqrtm")
  # Expected: plain traces, and the square-root trace of the offset product
  # (S1 + eps I)(S2 + eps I).
  off = eps * np.eye(8)
  tr_root = (np.trace(s1 + off) + np.trace(s2 + off)
             - _reference_frechet(np.zeros(8), s1 + off, np.zeros(8),
                                  s2 + off)) / 2
  expected = (np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
              - 2 * tr_root)
  assert got == pytest.approx(expected, rel=1e-9)
  without_offset = _reference_frechet(mu1, s1, mu2, s2)
  assert abs(got - without_offset) > 0.05
  assert fid.frechet_distance(mu1, s1, mu2, s2, eps=eps) == pytest.approx(
      without_offset, rel=1e-10)
  # A well-conditioned product does not get the offset.
  s3 = _random_cov(rng, 8)
  for method in fid.METHODS:
    assert fid.frechet_distance(mu1, s3, mu2, s3 * 2, eps=eps,
                                method=method) == (
        pytest.approx(_reference_frechet(mu1, s3, mu2, s3 * 2), rel=1e-10))


def test_fid_rejects_invalid_input():
  with pytest.raises(ValueError, match="imaginary"):
    fid.frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2),
                         np.eye(2), method="sqrtm")
  with pytest.raises(ValueError, match="method must be one of"):
    fid.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2),
                         method="svd")
  with pytest.raises(ValueError, match="same length"):
    fid.frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
  with pytest.raises(ValueError, match="covariances"):
    fid.frechet_distance(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2))
  with pytest.raises(ValueError, match="non-finite"):
    fid.frechet_distance(np.array([np.nan, 0]), np.eye(2), np.zeros(2),
                         np.eye(2))
  with pytest.raises(ValueError, match="at least 2"):
    fid.compute_statistics(np.zeros((1, 4)))


def _features(rng, n, d, gamma=False):
  """Correlated, non-Gaussian features with unequal scales."""
  mix = rng.normal(size=(d, d)) * rng.uniform(0.1, 2.0, size=d)
  base = rng.gamma(2.0, size=(n, d)) if gamma else rng.normal(size=(n, d))
  return base @ mix + rng.normal(size=d)


def test_fid_eigh_matches_sqrtm_on_full_rank_covariances():
  rng = np.random.RandomState(10)
  d = 256
  for n1, n2 in ((1000, 800), (3000, 300 + d)):
    a, b = _features(rng, n1, d), _features(rng, n2, d, gamma=True)
    mu1, s1 = fid.compute_statistics(a)
    mu2, s2 = fid.compute_statistics(b)
    reference = fid.frechet_distance(mu1, s1, mu2, s2, method="sqrtm")
    assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(
        reference, rel=1e-9)
    # The same distribution (small FID, so the trace term cancels most).
    mu3, s3 = fid.compute_statistics(_features(np.random.RandomState(11),
                                               2000, d))
    mu4, s4 = fid.compute_statistics(_features(np.random.RandomState(11),
                                               4000, d)[2000:])
    small = fid.frechet_distance(mu3, s3, mu4, s4, method="sqrtm")
    assert fid.frechet_distance(mu3, s3, mu4, s4) == pytest.approx(
        small, rel=1e-6)


def test_fid_eigh_matches_sqrtm_on_rank_deficient_covariances():
  # N < D as in FID at N=1000 with 2048-d features: S1 alone, S2 alone, or
  # both singular (three code paths of the eigh route).
  rng = np.random.RandomState(12)
  d, eps = 256, fid.DEFAULT_EPS
  full = fid.compute_statistics(_features(rng, 2 * d, d))
  low1 = fid.compute_statistics(_features(rng, 100, d))
  low2 = fid.compute_statistics(_features(rng, 180, d, gamma=True))
  off = eps * np.eye(d)
  for (mu1, s1), (mu2, s2) in ((low1, full), (full, low2), (low1, low2)):
    assert np.linalg.matrix_rank(s1) < d or np.linalg.matrix_rank(s2) < d
    # On the eps-offset protocol both routes compute the same (full-rank)
    # quantity: tr ((S1 + eps I)(S2 + eps I))^(1/2). Its smallest
    # eigenvalues (~eps^2 .. eps |S|) lie under the eigh route's rank
    # tolerance D * 2e-16 * max and are dropped: ~5e-8 relative here.
    tr_sqrtm = fid._sqrtm_trace(s1 + off, s2 + off, eps)  # pylint: disable=protected-access
    tr_eigh = fid._eigh_trace(s1 + off, s2 + off)  # pylint: disable=protected-access
    assert tr_eigh == pytest.approx(tr_sqrtm, rel=1e-6)
    # The eigh route takes singular inputs as they are (no offset: the
    # offset moves this FID by ~3e-5 relative); it matches the most accurate
    # form (singular values, rank-truncated factors) to round-off, the
    # clipped-eigenvalue reference (sqrt of round-off per null direction) to
    # ~2e-8, and the sqrtm route without offset (SciPy does not flag these
    # products) to 1e-6.
    got = fid.frechet_distance(mu1, s1, mu2, s2)
    assert got == pytest.approx(_nuclear_norm_frechet(mu1, s1, mu2, s2),
                                rel=1e-12)
    assert got == pytest.approx(_reference_frechet(mu1, s1, mu2, s2),
                                rel=1e-7)
    assert got == pytest.approx(
        fid.frechet_distance(mu1, s1, mu2, s2, method="sqrtm"), rel=1e-6)
  # Exactly singular and degenerate inputs.
  assert fid.frechet_distance(np.zeros(3), np.zeros((3, 3)), np.ones(3),
                              np.zeros((3, 3))) == pytest.approx(3.0)
  assert fid.frechet_distance(np.zeros(3), np.zeros((3, 3)), np.zeros(3),
                              np.diag([1.0, 4.0, 0.0])) == pytest.approx(5.0)


def test_fid_eigh_rejects_non_covariances():
  eye = np.eye(3)
  with pytest.raises(ValueError, match="sigma1 is not positive semi-definite"):
    fid.frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2),
                         np.eye(2))
  with pytest.raises(ValueError, match="sigma2 is not positive semi-definite"):
    fid.frechet_distance(np.zeros(3), eye, np.zeros(3),
                         np.diag([1.0, 2.0, -0.1]))
  # Both singular (the pivoted-Cholesky path), one of them indefinite.
  with pytest.raises(ValueError, match="sigma1 is not positive semi-definite"):
    fid.frechet_distance(np.zeros(3), np.diag([1.0, 0.0, -0.5]), np.zeros(3),
                         np.diag([1.0, 1.0, 0.0]))
  with pytest.raises(ValueError, match="sigma2 is not symmetric"):
    fid.frechet_distance(np.zeros(3), eye, np.zeros(3),
                         eye + np.triu(np.ones((3, 3)), 1))
  # Round-off: tiny asymmetry and tiny negative eigenvalues are accepted.
  rng = np.random.RandomState(13)
  x = rng.normal(size=(20, 40))
  s = np.cov(x, rowvar=False)           # Rank 19: eigenvalues ~ -1e-16.
  s_noisy = s + 1e-12 * rng.normal(size=s.shape)
  assert fid.frechet_distance(np.zeros(40), s_noisy, np.zeros(40), s) == (
      pytest.approx(0.0, abs=1e-4))
  # A float32-stored covariance is accepted.
  s32 = np.cov(rng.normal(size=(100, 40)) @ rng.normal(size=(40, 40)),
               rowvar=False).astype(np.float32)
  assert fid.frechet_distance(np.zeros(40), s32, np.zeros(40), s32) == (
      pytest.approx(0.0, abs=1e-2))


def test_real_vs_real_fid_floor():
  x = np.random.RandomState(6).normal(size=(1000, 8))
  a, b = fid.split_disjoint(1000, 300, seed=7)
  assert len(a) == len(b) == 300
  assert not set(a) & set(b)
  floor = fid.real_vs_real_fid(x, 300, seed=7)
  assert floor == pytest.approx(fid.fid_from_features(x[a], x[b]), rel=1e-12)
  assert 0 < floor < 0.5          # Same distribution: small but positive.
  with pytest.raises(ValueError, match="disjoint"):
    fid.real_vs_real_fid(x, 600)


# ----------------------------------------------------------------------------
# Reference statistics cache.


def test_reference_cache_computes_once_and_reloads(tmp_path):
  path = reference.reference_cache_path(tmp_path, "fashion_mnist", "train",
                                        28, num_images=500)
  assert path.name == "fashion_mnist_train_28x28_n500_inception_v3.npz"
  assert path != reference.reference_cache_path(tmp_path, "fashion_mnist",
                                                "train", 32, num_images=500)
  assert path != reference.reference_cache_path(tmp_path, "fashion_mnist",
                                                "test", 28, num_images=500)
  feats = np.random.RandomState(8).normal(size=(500, 16)).astype(np.float32)
  calls = []

  def compute():
    calls.append(1)
    return feats

  first = reference.load_or_compute_reference(path, compute,
                                              metadata={"split": "train"})
  second = reference.load_or_compute_reference(path, compute)
  assert len(calls) == 1
  for stats in (first, second):
    np.testing.assert_allclose(stats.mu, feats.astype(np.float64).mean(0))
    np.testing.assert_allclose(stats.sigma, np.cov(feats.astype(np.float64),
                                                   rowvar=False), rtol=1e-10)
    np.testing.assert_array_equal(stats.features, feats)
    assert stats.num_images == 500
  assert second.metadata == {"split": "train"}
  assert second.fid(feats) == pytest.approx(0.0, abs=1e-8)

  path.write_bytes(b"not an npz")   # Corrupt -> recomputed, with a warning.
  with pytest.warns(UserWarning, match="recomputing"):
    third = reference.load_or_compute_reference(path, compute)
  assert len(calls) == 2
  np.testing.assert_array_equal(third.features, feats)


def test_reference_without_features_is_upgraded(tmp_path):
  path = tmp_path / "ref.npz"
  feats = np.random.RandomState(9).normal(size=(50, 4))
  stats = reference.load_or_compute_reference(path, lambda: feats,
                                              keep_features=False)
  assert stats.features is None
  assert reference.ReferenceStats.load(path).features is None
  stats = reference.load_or_compute_reference(path, lambda: feats)
  assert stats.features.shape == (50, 4)


# ----------------------------------------------------------------------------
# Precision / recall.


def test_knn_radii_and_neighbors_match_brute_force():
  rng = np.random.RandomState(10)
  x = rng.normal(size=(53, 5))
  q = rng.normal(size=(17, 5))
  d = scipy.spatial.distance.cdist(x, x)
  np.testing.assert_allclose(distances.kth_neighbor_distances(x, 3, 8),
                             np.sort(d, axis=1)[:, 3], rtol=1e-10)
  np.testing.assert_allclose(distances.pairwise_distances(q, x, 4),
                             scipy.spatial.distance.cdist(q, x), rtol=1e-10)
  dist, idx = distances.nearest_neighbors(q, x, 4, block_size=5)
  ref = scipy.spatial.distance.cdist(q, x)
  np.testing.assert_array_equal(idx, np.argsort(ref, axis=1)[:, :4])
  np.testing.assert_allclose(dist, np.sort(ref, axis=1)[:, :4], rtol=1e-10)


def test_precision_recall_toy_known_answer():
  # Real: points 0..9 on a line; k=3 radii are 3 at the ends, 2 inside
  # (except 2 at 1 and 8: neighbours at distance 1, 1, 2).
  real = np.arange(10, dtype=np.float64)[:, None]
  # Fake: a tight cluster inside the real range plus two far outliers.
  fake = np.array([4.0, 4.1, 4.2, 4.3, 50.0, -40.0])[:, None]
  got = prdc.prdc(real, fake, k=3, block_size=4)
  # Precision: the 4 cluster points are inside real balls, outliers not.
  assert got["precision"] == pytest.approx(4 / 6)
  # Fake radii (k=3): 0.3, 0.2, 0.2, 0.3 for the cluster, huge for the
  # outliers (45.9 around 50, 44.2 around -40): those cover real points
  # 5..9 (|x - 50| <= 45.9 -> x >= 4.1) and 0..4 (|x + 40| <= 44.2 ->
  # x <= 4.2) - so all 10 real points are covered.
  assert got["recall"] == pytest.approx(1.0)
  # Coverage: real points with a fake *strictly* within their radius 2:
  # real 3..6 (nearest fake at 1.0, 0, 0.7, 1.7); not real 2 (exactly 2.0
  # from 4.0) nor 7 (2.7 from 4.3).
  assert got["coverage"] == pytest.approx(4 / 10)
  # Density: each cluster point lies in the (inclusive) balls of real
  # 3..6, and 4.0 also in that of real 2 (distance exactly 2).
  assert got["density"] == pytest.approx((5 + 4 + 4 + 4) / (3 * 6))
  pr = prdc.precision_recall(real, fake, k=3)
  assert pr == {"precision": got["precision"], "recall": got["recall"]}

  # Without the outliers the fake manifold is tiny: recall 1/10 (real 4).
  pr = prdc.precision_recall(real, fake[:4], k=3)
  assert pr["precision"] == 1.0 and pr["recall"] == pytest.approx(0.1)


def _reference_prdc(real, fake, k):
  d_rr = scipy.spatial.distance.cdist(real, real)
  d_ff = scipy.spatial.distance.cdist(fake, fake)
  d_rf = scipy.spatial.distance.cdist(real, fake)
  r_real = np.sort(d_rr, axis=1)[:, k]
  r_fake = np.sort(d_ff, axis=1)[:, k]
  precision = np.mean([any(d_rf[i, j] <= r_real[i]
                           for i in range(len(real)))
                       for j in range(len(fake))])
  recall = np.mean([any(d_rf[i, j] <= r_fake[j] for j in range(len(fake)))
                    for i in range(len(real))])
  density = sum(d_rf[i, j] <= r_real[i] for i in range(len(real))
                for j in range(len(fake))) / (k * len(fake))
  coverage = np.mean(d_rf.min(axis=1) < r_real)
  return dict(precision=precision, recall=recall, density=density,
              coverage=coverage)


def test_prdc_matches_brute_force_reference():
  rng = np.random.RandomState(11)
  real = rng.normal(size=(70, 6))
  fake = rng.normal(size=(55, 6)) * 1.3 + 0.4
  got = prdc.prdc(real, fake, k=3, block_size=16)
  expected = _reference_prdc(real, fake, 3)
  for key, value in expected.items():
    assert got[key] == pytest.approx(value, abs=1e-12), key
  assert 0 < got["precision"] < 1 and 0 < got["recall"] < 1
  same = prdc.precision_recall(real, real, k=3)
  assert same == {"precision": 1.0, "recall": 1.0}


# ----------------------------------------------------------------------------
# Class fidelity.


def _reference_knn_predict(train, labels, queries, k):
  d = scipy.spatial.distance.cdist(queries, train)
  out = []
  for row in d:
    order = np.argsort(row, kind="stable")[:k]
    votes = np.bincount(labels[order], minlength=labels.max() + 1)
    winners = set(np.flatnonzero(votes == votes.max()))
    out.append(next(labels[i] for i in order if labels[i] in winners))
  return np.array(out)


def test_knn_classifier_matches_brute_force():
  rng = np.random.RandomState(12)
  train = rng.normal(size=(120, 5))
  labels = rng.randint(0, 4, size=120)
  queries = rng.normal(size=(40, 5))
  for k in (1, 4, 5):
    clf = classifier.KNNClassifier(train, labels, k=k, block_size=7)
    np.testing.assert_array_equal(
        clf.predict(queries), _reference_knn_predict(train, labels, queries,
                                                     k))


def test_knn_tie_goes_to_nearest_class():
  train = np.array([[0.0], [1.0], [10.0], [12.0]])
  labels = np.array([0, 1, 1, 0])
  clf = classifier.KNNClassifier(train, labels, k=2)
  # Neighbours of 0.2: 0 (class 0, d=.2) and 1 (class 1, d=.8): tie -> 0.
  # Neighbours of 0.8: 1 (class 1) first -> 1.
  np.testing.assert_array_equal(clf.predict([[0.2], [0.8], [11.2]]),
                                [0, 1, 0])


def test_class_fidelity_on_separated_clusters():
  rng = np.random.RandomState(13)
  centres = np.eye(3) * 20
  train_labels = np.repeat(np.arange(3), 50)
  train = centres[train_labels] + rng.normal(size=(150, 3))
  test_labels = np.repeat(np.arange(3), 10)
  test = centres[test_labels] + rng.normal(size=(30, 3))
  # Generated: class 0 samples all look like class 0, half of the class 1
  # samples look like class 2, class 2 ones all like class 2.
  gen_labels = np.repeat(np.arange(3), 10)
  looks_like = gen_labels.copy()
  looks_like[10:15] = 2
  gen = centres[looks_like] + rng.normal(size=(30, 3))
  result = classifier.class_fidelity(train, train_labels, gen, gen_labels,
                                     test, test_labels, k=5)
  assert result.generated_per_class == {0: 1.0, 1: 0.5, 2: 1.0}
  assert result.generated_accuracy == pytest.approx(25 / 30)
  assert result.real_test_accuracy == 1.0
  assert result.real_test_per_class == {0: 1.0, 1: 1.0, 2: 1.0}
  with pytest.raises(ValueError, match="both"):
    classifier.class_fidelity(train, train_labels, gen, gen_labels, test)


# ----------------------------------------------------------------------------
# PSNR / SSIM.


def test_psnr_known_values():
  a = np.zeros((2, 4, 4, 3), np.float32)
  b = a.copy()
  b[0] += 0.1                        # MSE 0.01 -> 20 dB.
  got = np.asarray(reconstruction.psnr(a, b))
  assert got[0] == pytest.approx(20.0, abs=1e-4)
  assert got[1] == np.inf
  got = np.asarray(reconstruction.psnr(a * 255, b * 255, max_val=255.0))
  assert got[0] == pytest.approx(20.0, abs=1e-4)
  with pytest.raises(ValueError, match="differ"):
    reconstruction.psnr(a, b[:, :3])


def _reference_ssim(x, y, max_val=1.0, size=11, sigma=1.5):
  """Direct definition: weighted window statistics at every position."""
  g = np.exp(-0.5 * ((np.arange(size) - (size - 1) / 2) / sigma) ** 2)
  w = np.outer(g, g) / np.outer(g, g).sum()
  c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
  out = []
  for xi, yi in zip(x.astype(np.float64), y.astype(np.float64)):
    vals = []
    for c in range(xi.shape[-1]):
      for i in range(xi.shape[0] - size + 1):
        for j in range(xi.shape[1] - size + 1):
          px, py = xi[i:i + size, j:j + size, c], yi[i:i + size, j:j + size, c]
          mx, my = np.sum(w * px), np.sum(w * py)
          vx, vy = np.sum(w * (px - mx) ** 2), np.sum(w * (py - my) ** 2)
          cov = np.sum(w * (px - mx) * (py - my))
          vals.append((2 * mx * my + c1) * (2 * cov + c2) /
                      ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
    out.append(np.mean(vals))
  return np.array(out)


def test_ssim_matches_direct_reference():
  rng = np.random.RandomState(14)
  x = rng.rand(3, 14, 16, 2).astype(np.float32)
  y = np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1).astype(np.float32)
  y[2] = rng.rand(14, 16, 2)         # Unrelated image: low SSIM.
  got = np.asarray(reconstruction.ssim(x, y))
  expected = _reference_ssim(x, y)
  np.testing.assert_allclose(got, expected, atol=2e-5)
  assert expected[2] < 0.2 < 0.5 < expected[0]
  np.testing.assert_allclose(np.asarray(reconstruction.ssim(x, x)), 1.0,
                             atol=1e-6)


def test_ssim_constant_images_closed_form():
  a = np.full((1, 12, 12, 1), 0.2, np.float32)
  b = np.full((1, 12, 12, 1), 0.7, np.float32)
  c1 = 0.01 ** 2
  expected = (2 * 0.2 * 0.7 + c1) / (0.2 ** 2 + 0.7 ** 2 + c1)
  assert float(reconstruction.ssim(a, b)[0]) == pytest.approx(expected,
                                                              rel=1e-5)
  with pytest.raises(ValueError, match="smaller"):
    reconstruction.ssim(a[:, :10], b[:, :10])


# ----------------------------------------------------------------------------
# Codebook.


def test_codebook_usage_and_perplexity():
  ids = np.array([[0, 0], [1, 1]])
  stats = codebook.codebook_stats(ids, 4)
  assert stats == {"usage": 0.5, "usage_percent": 50.0, "num_used": 2.0,
                   "perplexity": pytest.approx(2.0)}
  assert codebook.codebook_perplexity(np.full(10, 3), 8) == pytest.approx(1.0)
  assert codebook.codebook_perplexity(np.arange(16), 16) == pytest.approx(16)
  rng = np.random.RandomState(15)
  ids = rng.choice(64, size=5000, p=rng.dirichlet(np.ones(64) * 0.3))
  counts = np.bincount(ids, minlength=128)
  assert codebook.codebook_perplexity(ids, 128) == pytest.approx(
      math.exp(scipy.stats.entropy(counts)), rel=1e-12)
  assert codebook.codebook_usage(ids, 128) == np.count_nonzero(counts) / 128
  with pytest.raises(ValueError, match=r"\[0, 4\)"):
    codebook.codebook_usage(np.array([0, 4]), 4)
  with pytest.raises(ValueError, match="integers"):
    codebook.codebook_usage(np.array([0.5]), 4)
