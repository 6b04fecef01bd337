"""Class fidelity of class-conditional samples via a k-NN classifier.

A k-nearest-neighbour classifier (Euclidean, majority vote) is fitted on the
Inception features of a real *training* set. For class-conditional
generation we report its accuracy on generated samples of each conditioned
class (does a "sneaker" sample look like a sneaker?), and, as the ceiling,
its accuracy on a real *test* set.

Votes are ties-broken towards the class of the nearest neighbour among the
tied classes.
"""
import dataclasses

import numpy as np

from maskgit_jax.metrics import distances

DEFAULT_K = 5


class KNNClassifier:
  """k-NN majority-vote classifier on feature vectors.

  Args:
    features: `[N, D]` training features.
    labels: `[N]` integer labels in [0, num_classes).
    k: neighbours per vote.
    block_size: query rows per distance block.
  """

  def __init__(self, features, labels, k: int = DEFAULT_K,
               block_size: int = distances.DEFAULT_BLOCK_SIZE):
    features = np.asarray(features, np.float64)
    labels = np.asarray(labels)
    if features.ndim != 2:
      raise ValueError(f"features must be [num, dim], got {features.shape}")
    if labels.shape != (features.shape[0],):
      raise ValueError(f"labels must be [{features.shape[0]}], got "
                       f"{labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
      raise ValueError("labels must be non-negative integers")
    if not 1 <= k <= features.shape[0]:
      raise ValueError(f"need 1 <= k <= {features.shape[0]}, got k={k}")
    self.features = features
    self.labels = labels.astype(np.int64)
    self.k = k
    self.block_size = block_size
    self.num_classes = int(self.labels.max()) + 1

  def predict(self, queries) -> np.ndarray:
    """`[Q]` int64 predicted labels of `[Q, D]` query features."""
    _, idx = distances.nearest_neighbors(queries, self.features, self.k,
                                         self.block_size)
    neigh = self.labels[idx]                               # [Q, k], sorted.
    votes = np.zeros((neigh.shape[0], self.num_classes), np.int64)
    np.add.at(votes, (np.arange(neigh.shape[0])[:, None], neigh), 1)
    tied = votes == votes.max(axis=1, keepdims=True)       # [Q, C]
    # First (nearest) neighbour whose class is among the tied winners.
    is_winner = np.take_along_axis(tied, neigh, axis=1)    # [Q, k]
    first = np.argmax(is_winner, axis=1)
    return neigh[np.arange(neigh.shape[0]), first]

  def accuracy(self, queries, labels) -> float:
    labels = np.asarray(labels)
    pred = self.predict(queries)
    if labels.shape != pred.shape:
      raise ValueError(f"labels must be {pred.shape}, got {labels.shape}")
    return float(np.mean(pred == labels))


def per_class_accuracy(predictions, labels) -> dict[int, float]:
  """{class: accuracy over the items of that class}."""
  predictions = np.asarray(predictions)
  labels = np.asarray(labels)
  return {int(c): float(np.mean(predictions[labels == c] == c))
          for c in np.unique(labels)}


@dataclasses.dataclass(frozen=True)
class ClassFidelity:
  """k-NN class fidelity results.

  Attributes:
    generated_accuracy: accuracy on all generated samples (their
      conditioning class as the label).
    generated_per_class: {class: accuracy} on generated samples.
    real_test_accuracy: accuracy on the real test set (None if not given).
    real_test_per_class: {class: accuracy} on the real test set.
  """
  generated_accuracy: float
  generated_per_class: dict
  real_test_accuracy: float | None = None
  real_test_per_class: dict | None = None


def class_fidelity(train_features, train_labels, generated_features,
                   generated_labels, test_features=None, test_labels=None,
                   k: int = DEFAULT_K) -> ClassFidelity:
  """Fits a k-NN on real training features and scores generated / test sets.

  Args:
    train_features, train_labels: `[N, D]`, `[N]` real training set.
    generated_features, generated_labels: `[M, D]` features of generated
      samples and `[M]` the classes they were conditioned on.
    test_features, test_labels: optional `[T, D]`, `[T]` real test set.
    k: neighbours per vote.

  Returns:
    ClassFidelity.
  """
  clf = KNNClassifier(train_features, train_labels, k=k)
  gen_labels = np.asarray(generated_labels)
  gen_pred = clf.predict(generated_features)
  if gen_labels.shape != gen_pred.shape:
    raise ValueError(f"generated_labels must be {gen_pred.shape}, got "
                     f"{gen_labels.shape}")
  result = dict(generated_accuracy=float(np.mean(gen_pred == gen_labels)),
                generated_per_class=per_class_accuracy(gen_pred, gen_labels))
  if (test_features is None) != (test_labels is None):
    raise ValueError("give both test_features and test_labels, or neither")
  if test_features is not None:
    test_labels = np.asarray(test_labels)
    test_pred = clf.predict(test_features)
    if test_labels.shape != test_pred.shape:
      raise ValueError(f"test_labels must be {test_pred.shape}, got "
                       f"{test_labels.shape}")
    result.update(real_test_accuracy=float(np.mean(test_pred == test_labels)),
                  real_test_per_class=per_class_accuracy(test_pred,
                                                         test_labels))
  return ClassFidelity(**result)
