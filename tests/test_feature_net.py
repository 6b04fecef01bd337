"""The perceptual loss's own feature network (train_lib/feature_net_task)."""
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import test_train

from maskgit_jax.nets import feature_net
from maskgit_jax.train_lib import feature_net_task
from maskgit_jax.train_lib import run


def _section(steps, **kw):
  return ml_collections.ConfigDict(dict(
      perceptual_weights="", feature_net=dict(
          steps=steps, batch_size=kw.get("batch_size", 16),
          lr=kw.get("lr", 3e-3), widths=kw.get("widths", (4, 8)))))


class _UpOrDown:
  """A fake labelled data set with a known answer: class 0 images are bright
  in their top half, class 1 in their bottom half (a horizontal mirror image
  keeps the class), with noise."""

  def __init__(self, n=256, size=8):
    rs = np.random.RandomState(0)
    self.labels = rs.randint(0, 2, n).astype(np.int32)
    images = rs.rand(n, size, size, 1).astype(np.float32) * 0.5
    half = size // 2
    images[self.labels == 0, :half] += 0.5
    images[self.labels == 1, half:] += 0.5
    self.images = images
    self.num_examples = n
    self.num_classes = 2
    self.image_shape = (size, size, 1)
    self.config = ml_collections.ConfigDict(dict(random_flip=True))

  def ordered_batches(self, records, batch_size):
    for i in range(0, len(records), batch_size):
      r = records[i:i + batch_size]
      yield {"image": self.images[r], "label": self.labels[r],
             "mask": np.ones(len(r), bool)}


def test_distance_is_zero_for_equal_images_and_grows_with_difference():
  net = feature_net.FeatureNet(widths=(4, 8, 8), num_classes=3)
  x = jnp.asarray(np.random.RandomState(0).rand(2, 12, 12, 3), jnp.float32)
  params = net.init(jax.random.PRNGKey(0), x)["params"]
  logits, feats = net.apply({"params": params}, x)
  assert logits.shape == (2, 3)
  assert [f.shape for f in feats] == [(2, 12, 12, 4), (2, 6, 6, 8),
                                      (2, 3, 3, 8)]
  d = lambda a, b: float(feature_net.perceptual_distance(net, params, a, b))  # noqa: E731
  assert d(x, x) == pytest.approx(0.0, abs=1e-6)
  near, far = x + 0.02, 1.0 - x
  assert 0 < d(x, near) < d(x, far)
  assert d(x, far) == pytest.approx(d(far, x), rel=1e-5)
  # Each stage's term is at most 4 (unit vectors), so the sum is bounded.
  assert d(x, far) <= 4 * 3


def test_training_learns_a_known_labelling():
  data = _UpOrDown()
  net = feature_net_task.make_net(_section(60), data.num_classes)
  params, metrics = feature_net_task.train(net, data, _section(60), seed=0,
                                           log=lambda m: None)
  logits, _ = net.apply({"params": params}, data.images)
  accuracy = float(np.mean(np.argmax(logits, -1) == data.labels))
  assert accuracy > 0.9, (accuracy, metrics)
  again, _ = feature_net_task.train(net, data, _section(60), seed=0,
                                    log=lambda m: None)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(again)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_saved_network_is_read_back_not_retrained(tmp_path, monkeypatch):
  data = _UpOrDown()
  logs = []
  fn = feature_net_task.load_or_train(_section(5), data, str(tmp_path), 0,
                                      log=logs.append)
  assert (tmp_path / feature_net_task.FILE_NAME).exists()
  x = data.images[:4]
  first = float(fn(x, 1 - x))

  def no_training(*a, **k):
    raise AssertionError("retrained")
  monkeypatch.setattr(feature_net_task, "train", no_training)
  fn2 = feature_net_task.load_or_train(_section(5), data, str(tmp_path), 0,
                                       log=logs.append)
  assert float(fn2(x, 1 - x)) == first
  assert any("read" in m for m in logs)
  # Another width: one line naming the file.
  with pytest.raises(ValueError, match="feature_net.msgpack: not the feature"):
    feature_net_task.load_or_train(_section(5, widths=(4, 16)), data,
                                   str(tmp_path), 0, log=logs.append)
  assert feature_net_task.load_or_train(_section(0), data, str(tmp_path),
                                        0) is None


@pytest.mark.parametrize("change, message", [
    (dict(num_classes=1), "feature_net.steps=3 trains a classifier"),
    (dict(perceptual_weights="x.pt"), "both name a perceptual network"),
    (dict(batch_size=0), "feature_net.batch_size=0 must be"),
    (dict(widths=(4, -1)), "feature_net.widths=\\(4, -1\\) must be"),
    (dict(lr=-1.0), "feature_net.lr=-1.0 must be"),
])
def test_bad_settings_stop_before_training(tmp_path, change, message):
  config = test_train.tiny_config(stages=("tokenizer",), steps=2)
  config.tokenizer_training.feature_net.steps = 3
  for key, value in change.items():
    if key == "num_classes":
      config.num_classes = value
    elif key == "perceptual_weights":
      config.tokenizer_training.perceptual_weights = value
    else:
      config.tokenizer_training.feature_net[key] = value
  with pytest.raises(ValueError, match=message):
    run.train_and_evaluate(config, str(tmp_path / "run"),
                           devices=jax.devices()[:1])
  assert not (tmp_path / "run" / "tokenizer").exists()


def test_stage_one_trains_with_its_own_perceptual_network(tmp_path):
  config = test_train.tiny_config(stages=("tokenizer",), steps=2)
  config.tokenizer_training.perceptual_weight = 0.1
  config.tokenizer_training.feature_net.steps = 3
  config.tokenizer_training.feature_net.batch_size = 8
  run.train_and_evaluate(config, str(tmp_path), devices=jax.devices()[:1])
  assert (tmp_path / "tokenizer" / feature_net_task.FILE_NAME).exists()
  rows = [json.loads(line) for line in
          (tmp_path / "tokenizer" / "metrics.jsonl").read_text().splitlines()]
  values = [r["perceptual_loss"] for r in rows if "perceptual_loss" in r]
  assert len(values) == 2 and all(v > 0 for v in values)
  recorded = json.loads((tmp_path / "config.json").read_text())
  assert recorded["tokenizer_training"]["feature_net"]["steps"] == 3
