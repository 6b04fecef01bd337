"""Stage 2 from a token cache: the same ids, order and flips as on the fly."""
import jax
import numpy as np
import pytest

from maskgit_jax import data as data_lib
from maskgit_jax.common import multihost
from maskgit_jax.nets import factory
from maskgit_jax.data import token_cache
from maskgit_jax.train_lib import run
import test_train


def _setup(tmp_path, batch=16):
  config = test_train.tiny_config()
  tokenizer = factory.tokenizer_from_config(config)
  variables = factory.init_tokenizer(tokenizer, jax.random.PRNGKey(0),
                                    config.image_size)
  dcfg = data_lib.config.for_model(config, tokenizer.channels)
  dataset = data_lib.create_dataset(dcfg, "train", batch,
                                    cache_dir=str(tmp_path))
  encode = jax.jit(lambda x: tokenizer.apply(
      variables, x, method=tokenizer.encode_to_indices))
  return dataset, encode, variables


def test_cache_encoded_data_parallel_holds_the_one_device_ids(tmp_path):
  """The training run's cache splits each batch over the local devices (8
  here); its ids are those of one device's encoder."""
  split, _ = multihost.local_batch_split(2 * token_cache.BATCH_SIZE)
  assert split is not None and split.mesh.devices.size == 8
  assert multihost.local_batch_split(12) == (None, None)  # 8 do not divide
  dataset, encode, variables = _setup(tmp_path)
  config = test_train.tiny_config()
  tokenizer = factory.tokenizer_from_config(config)
  batches = run._token_batches(dataset, tokenizer, variables,
                               str(tmp_path / "run"), lambda m: None)
  digest = token_cache.tokenizer_digest(variables)
  one = token_cache.build(dataset, encode, str(tmp_path / "one"),
                          tokenizer_digest=digest, log=lambda m: None)
  np.testing.assert_array_equal(batches._ids, one["ids"])
  assert (one["ids"] >= 0).all()


def test_cached_batches_equal_on_the_fly_tokens_across_epochs(tmp_path):
  dataset, encode, variables = _setup(tmp_path)
  digest = token_cache.tokenizer_digest(variables)
  cache = token_cache.build(dataset, encode, str(tmp_path / "tc"),
                            tokenizer_digest=digest, batch_size=64,
                            log=lambda m: None)
  assert cache["ids"].shape[:2] == (256, 2) and cache["valid"].all()
  cached = token_cache.TokenBatches(dataset, cache)
  images = dataset.iterator()
  flips = 0
  for step in range(dataset.steps_per_epoch + 3):  # Into the second epoch.
    a, b = next(cached), next(images)
    ids = np.asarray(encode(b["image"])).reshape(len(b["label"]), -1)
    np.testing.assert_array_equal(a["tokens"], ids, err_msg=f"step {step}")
    np.testing.assert_array_equal(a["label"], b["label"])
    records = dataset.record_indices(step)
    flips += int(np.sum(np.any(
        cache["ids"][records, 1] != cache["ids"][records, 0], -1) &
                        np.all(a["tokens"] == cache["ids"][records, 1], -1)))
  assert flips > 0  # Mirror views were used, not only centre ones.
  images.close()


def test_resume_and_reuse(tmp_path):
  dataset, encode, variables = _setup(tmp_path)
  digest = token_cache.tokenizer_digest(variables)
  cache = token_cache.build(dataset, encode, str(tmp_path / "tc"),
                            tokenizer_digest=digest, log=lambda m: None)
  first = token_cache.TokenBatches(dataset, cache)
  for _ in range(5):
    next(first)
  state = first.get_state()
  expected = next(first)
  second = token_cache.TokenBatches(dataset, cache)
  second.set_state(state)
  np.testing.assert_array_equal(next(second)["tokens"], expected["tokens"])

  def no_encode(x):
    raise AssertionError("the cached file should have been read")
  again = token_cache.build(dataset, no_encode, str(tmp_path / "tc"),
                            tokenizer_digest=digest, log=lambda m: None)
  np.testing.assert_array_equal(again["ids"], cache["ids"])
  # Another tokenizer never reads these ids.
  with pytest.raises(AssertionError, match="should have been read"):
    token_cache.build(dataset, no_encode, str(tmp_path / "tc"),
                      tokenizer_digest="another", log=lambda m: None)


def test_training_from_the_cache_equals_training_on_the_fly(tmp_path):
  results = []
  for use_cache in (False, True):
    config = test_train.tiny_config()
    config.transformer_training.token_cache = use_cache
    out = run.train_and_evaluate(config, str(tmp_path / str(use_cache)))
    results.append(out["transformer"]["params"])
  assert (tmp_path / "True" / "token_cache").is_dir()
  for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
