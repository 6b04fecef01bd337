"""The perceptual loss's own feature network, trained at the start of stage 1.

`tokenizer_training.feature_net.steps > 0` trains `nets.feature_net.FeatureNet`
as a classifier of the run's training images (their class labels; random
mirror images when the data config flips), then freezes it; stage 1 adds
`perceptual_weight` x its perceptual distance between reconstructions and
inputs. It replaces the FID Inception as the perceptual network, which may not
be trained against when FID measures the result.

The weights are saved to `WORKDIR/tokenizer/feature_net.msgpack` (atomically,
by process 0) and read back when the run resumes. Every process trains the
same network: the batches are drawn from the whole training set with a
generator seeded by the run's seed, not from the process's shard.
"""

import logging
import os
from typing import Callable, Optional

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from maskgit_jax.common import checks
from maskgit_jax.common import files
from maskgit_jax.nets import feature_net
from maskgit_jax.store import released

FILE_NAME = "feature_net.msgpack"
PerceptualFn = Callable[[jax.Array, jax.Array], jax.Array]


def enabled(section: ml_collections.ConfigDict) -> bool:
  """Whether `section` (= `config.tokenizer_training`) asks for the net."""
  fn = section.get("feature_net")
  return bool(fn is not None and fn.get("steps", 0))


def check(section: ml_collections.ConfigDict, num_classes: int) -> None:
  """One-line errors for settings that cannot work, before anything trains."""
  if not enabled(section):
    return
  fn = section.feature_net
  key = "tokenizer_training.feature_net."
  checks.check_int(key + "steps", fn.get("steps"), low=1,
                   note="steps=0 or None turns the network off")
  checks.check_int(key + "batch_size", fn.get("batch_size"), low=1,
                   allow_none=True, note="None: 64")
  checks.check_number(key + "lr", fn.get("lr"), 0, open_low=True,
                      allow_none=True)
  widths = fn.get("widths")
  if widths is not None and (
      not isinstance(widths, (tuple, list)) or not widths or
      not all(checks.is_int(w, 1) for w in widths)):
    checks.refuse(key + "widths", widths,
                  "a non-empty tuple of positive ints")
  if num_classes < 2:
    raise ValueError(
        f"tokenizer_training.feature_net.steps={fn.steps} trains a classifier"
        f" of the class labels, but the data has num_classes={num_classes}: "
        "set tokenizer_training.feature_net.steps=0 (or give the images "
        "class sub-folders).")
  if section.get("perceptual_weights"):
    raise ValueError(
        "tokenizer_training.feature_net.steps and "
        "tokenizer_training.perceptual_weights both name a perceptual "
        "network; keep one.")


def make_net(section: ml_collections.ConfigDict,
             num_classes: int) -> feature_net.FeatureNet:
  return feature_net.FeatureNet(
      widths=tuple(section.feature_net.get("widths") or (16, 32, 64)),
      num_classes=num_classes)


def train(net: feature_net.FeatureNet, dataset, section, seed: int,
          log=logging.info):
  """Trains `net` on `dataset`'s labelled images: `section.feature_net`'s
  steps of Adam (its `lr`) on batches of `batch_size` random records.
  Returns (params, metrics of the last steps)."""
  fn = section.feature_net
  steps, batch = int(fn.steps), int(fn.get("batch_size") or 64)
  rng = np.random.default_rng([int(seed), 0x5EED])
  records = rng.integers(0, dataset.num_examples, steps * batch)
  flips = (rng.random(steps * batch) < 0.5) & bool(
      dataset.config.random_flip)
  tx = optax.adam(float(fn.get("lr") or 1e-3))
  shape = (1,) + tuple(dataset.image_shape)
  params = net.init(jax.random.PRNGKey(int(seed)), jnp.zeros(shape))["params"]
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, images, labels, weights):
    def loss_fn(p):
      logits, _ = net.apply({"params": p}, images)
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
      correct = jnp.argmax(logits, -1) == labels
      n = jnp.maximum(jnp.sum(weights), 1.0)
      return jnp.sum(ce * weights) / n, jnp.sum(correct * weights) / n
    (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, acc

  history = []
  batches = dataset.ordered_batches(records, batch)
  for i, b in enumerate(batches):
    images = np.asarray(b["image"], np.float32)
    flip = flips[i * batch:i * batch + len(images)]
    images = np.where(flip[:, None, None, None], images[:, :, ::-1], images)
    weights = np.asarray(b.get("mask", np.ones(len(images))), np.float32)
    params, opt_state, loss, acc = step(params, opt_state, images,
                                        np.asarray(b["label"], np.int32),
                                        weights)
    history.append((float(loss), float(acc)))
    if (i + 1) % max(1, steps // 4) == 0 or i + 1 == steps:
      tail = np.mean(history[-50:], axis=0)
      log(f"[feature net] step {i + 1}/{steps} loss={tail[0]:.4f} "
          f"accuracy={tail[1]:.3f}")
  tail = np.mean(history[-50:], axis=0)
  return params, {"loss": float(tail[0]), "accuracy": float(tail[1])}


def load_or_train(section: ml_collections.ConfigDict, dataset,
                  stage_dir: str, seed: int,
                  log=logging.info) -> Optional[PerceptualFn]:
  """The frozen perceptual distance `(recon, images) -> scalar`, or None
  when `section.feature_net` is off. Reads `stage_dir/feature_net.msgpack`
  when it is there (a resumed run), else trains and writes it. The settings
  were checked by `check` (`config_checks.check_config`, before anything trained)."""
  if not enabled(section):
    return None
  net = make_net(section, dataset.num_classes)
  path = os.path.join(stage_dir, FILE_NAME)
  if os.path.exists(path):
    try:  # The project's msgpack reader: paths and shapes checked.
      params = released.load_variables(
          path, net, jnp.zeros((1,) + tuple(dataset.image_shape)))["params"]
    except ValueError as e:
      raise ValueError(f"{path}: not the feature network this config "
                       f"describes ({e}); move it away to train a new "
                       "one.") from None
    log(f"[feature net] read {path}")
  else:
    params, _ = train(net, dataset, section, seed, log=log)
    params = jax.device_get(params)
    if jax.process_index() == 0:
      files.write_bytes(path, flax.serialization.to_bytes(params))
      log(f"[feature net] wrote {path}")
  return lambda x, y: feature_net.perceptual_distance(net, params, x, y)
