"""Stage 2 from a token cache: the frozen tokenizer's codes, computed once.

Stage 2 trains on the token ids of a frozen tokenizer. Computing them on the
fly runs the tokenizer's encoder on every batch; the cache runs it once per
training record and view (the centre view and its mirror image, as the
PyTorch reproduction of MaskGIT does), and the training loop then reads ids:

  cache = token_cache.build(dataset, encode, cache_dir)   # [N, 2, L] ids
  batches = token_cache.TokenBatches(dataset, cache)      # resumable

`TokenBatches` visits the records in exactly the order of the image
pipeline (`dataset.record_indices`), with the same per-record flip: when
`random_crop` is off, the image pipeline's only training randomness is the
flip drawn first from `default_rng((seed, epoch, record))`, and the cache
draws the same one, so both paths give the same ids step for step
(tests/test_token_cache.py). With `random_crop` on, the cache replaces the
random crops by the centre crop (documented in the README).

Records that cannot be decoded are marked (ids -1) and skipped the way the
image pipeline skips them (the next record of the epoch). The cache file is
keyed by the data's and the tokenizer's fingerprints and written atomically:
`cache_dir/tokens-<key>.npz` (`ids` int32 [N, 2, L], `valid` bool [N],
`labels` int32 [N]).
"""
import hashlib
import json
import os
from typing import Any, Callable, Dict, Optional

import numpy as np

from maskgit_jax.common import files
from maskgit_jax.data import pipeline
from maskgit_jax.data import record_stream

_FORMAT = 'maskgit_jax.token_cache/1'
# Records per `encode` call (each call encodes their centre views and mirror
# images: twice as many images).
BATCH_SIZE = 256
EncodeFn = Callable[[np.ndarray], np.ndarray]


def cache_key(dataset: pipeline.Dataset, tokenizer_digest: str) -> str:
  """A short hash of what the ids depend on: the data and the tokenizer."""
  cfg = dataset.config
  fields = {k: cfg.get(k) for k in (
      'source', 'path', 'name', 'train_split', 'image_size', 'channels',
      'eval_crop_fraction', 'resize_method', 'max_examples')
            if k in cfg}
  text = json.dumps({'format': _FORMAT, 'data': fields,
                     'num_examples': dataset.num_examples,
                     'tokenizer': tokenizer_digest}, sort_keys=True,
                    default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def build(dataset: pipeline.Dataset, encode: EncodeFn, cache_dir: str, *,
          tokenizer_digest: str, batch_size: int = BATCH_SIZE,
          log: Callable[[str], None] = print) -> Dict[str, np.ndarray]:
  """The token ids of every training record, centre view and mirror image.

  Args:
    dataset: the stage-2 training `Dataset`.
    encode: float32 images [b, H, W, C] -> int ids [b, h, w] (jitted by the
      caller; called with full batches of `batch_size`, the last one padded).
    cache_dir: where the cache file is read from or written to.
    tokenizer_digest: a fingerprint of the tokenizer's weights (part of the
      file's key, so that another tokenizer never reads these ids).
    batch_size: images per `encode` call.
    log: progress messages.

  Returns:
    {'ids': int32 [N, 2, L], 'valid': bool [N], 'labels': int32 [N]}.
  """
  os.makedirs(cache_dir, exist_ok=True)
  path = os.path.join(cache_dir,
                      f'tokens-{cache_key(dataset, tokenizer_digest)}.npz')
  if os.path.exists(path):
    try:
      with np.load(path) as f:
        out = {k: f[k] for k in ('ids', 'valid', 'labels')}
      if out['ids'].shape[0] == dataset.num_examples:
        return out
    except (OSError, ValueError, KeyError) as e:
      log(f'token cache {path} is unreadable ({e}); rebuilding it')
  n = dataset.num_examples
  shape = dataset.image_shape
  valid = np.ones((n,), bool)
  labels = np.zeros((n,), np.int32)
  ids = None

  def collect(start, stop, codes):
    nonlocal ids
    codes = np.asarray(codes).reshape(2, batch_size, -1)
    if ids is None:
      ids = np.full((n, 2, codes.shape[-1]), -1, np.int32)
    ids[start:stop] = codes[:, :stop - start].transpose(1, 0, 2)

  log(f'token cache: encoding {n} records x 2 views into {path}')
  in_flight = None
  for start in range(0, n, batch_size):
    stop = min(start + batch_size, n)
    images = np.zeros((batch_size,) + tuple(shape), np.float32)
    for j, record in enumerate(range(start, stop)):
      try:
        image, labels[record] = dataset.source[record]
        images[j] = dataset.preprocessor(image, None)
      except Exception:  # pylint: disable=broad-except
        valid[record] = False  # The image pipeline skips it too.
    both = np.concatenate([images, images[:, :, ::-1]])
    # Dispatched, not waited for: JAX runs it while the loop reads and
    # preprocesses the next batch's records; its ids are collected then.
    codes = encode(both)
    if in_flight is not None:
      collect(*in_flight)
    in_flight = (start, stop, codes)
  if in_flight is not None:
    collect(*in_flight)
  ids[~valid] = -1
  files.atomic_write(path, lambda p: np.savez(p, ids=ids, valid=valid,
                                              labels=labels))
  log(f'token cache: {int(valid.sum())} of {n} records encoded')
  return {'ids': ids, 'valid': valid, 'labels': labels}


class TokenBatches:
  """Per-process batches `{'tokens': int32 [b, L], 'label': int32 [b]}` in
  the image pipeline's record order and flips; resumable like
  `pipeline.DataIterator` (`get_state`/`set_state`, the same state)."""

  def __init__(self, dataset: pipeline.Dataset, cache: Dict[str, np.ndarray]):
    if dataset.split != 'train':
      raise ValueError('the token cache serves training batches only')
    self._dataset = dataset
    self._ids = cache['ids']
    self._valid = cache['valid']
    self._labels = cache['labels']
    self._state = dataset.iterator()  # Only for its state bookkeeping.

  def _flip(self, epoch: int, record: int) -> bool:
    """The image pipeline's flip of `record` in `epoch` (its first draw
    when random_crop is off; a fair coin of the same seed otherwise)."""
    cfg = self._dataset.config
    if not cfg.random_flip:
      return False
    return bool(np.random.default_rng((cfg.seed, epoch, record)).random()
                < 0.5)

  def batch(self, step: int) -> Dict[str, np.ndarray]:
    """This process's batch number `step`."""
    ds = self._dataset
    b = ds.batch_size
    tokens = np.empty((b, self._ids.shape[-1]), np.int32)
    labels = np.empty((b,), np.int32)
    for j in range(b):
      epoch, position = ds.global_position(step * b + j)
      for attempt in range(record_stream.MAX_SUBSTITUTES + 1):
        record = ds.record_at(epoch, position + attempt)
        if self._valid[record]:
          break
      else:
        raise ValueError(f'{record_stream.MAX_SUBSTITUTES + 1} consecutive '
                         'training records are unreadable; check the data.')
      view = int(self._flip(epoch, record))
      tokens[j] = self._ids[record, view]
      labels[j] = self._labels[record]
    return {'tokens': tokens, 'label': labels,
            'mask': np.ones((b,), bool)}

  def __iter__(self) -> 'TokenBatches':
    return self

  def __next__(self) -> Dict[str, np.ndarray]:
    num = self._dataset.num_batches
    step = self._state.step
    if num is not None and step >= num:
      raise StopIteration
    out = self.batch(step)
    self._state._next_batch = step + 1  # pylint: disable=protected-access
    return out

  @property
  def step(self) -> int:
    return self._state.step

  def get_state(self) -> Dict[str, Any]:
    return self._state.get_state()

  def set_state(self, state: Any) -> None:
    self._state.set_state(state)

  def close(self) -> None:
    self._state.close()


def tokenizer_digest(variables: Any, fields: Optional[Dict] = None) -> str:
  """A fingerprint of a tokenizer's weights (and its config fields)."""
  import jax  # pylint: disable=import-outside-toplevel
  h = hashlib.sha256(json.dumps(fields or {}, sort_keys=True,
                                default=str).encode())
  for path, leaf in jax.tree_util.tree_leaves_with_path(variables):
    h.update(jax.tree_util.keystr(path).encode())
    h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
  return h.hexdigest()[:16]
