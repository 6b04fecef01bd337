"""Which record sits at each position of a process's stream, and its loading.

`Plan`: what the records of one process are and in which order (training:
one seeded permutation of all records per epoch, global batches sliced per
process; evaluation: a contiguous shard padded to whole batches).
`LoadRecord`: stream index -> {'image', 'label', 'mask'}, with the crop and
flip seeded by (seed, epoch, record) and an unreadable training record
replaced by the next one of the epoch's permutation (at most
`MAX_SUBSTITUTES` in a row). `even_split`: contiguous evaluation shards.
`maskgit_jax.data.pipeline` builds the batches and iterators on these.
"""
import dataclasses
import threading
from typing import Any

from absl import logging
import grain
import numpy as np

from maskgit_jax.data import preprocess
from maskgit_jax.data import sources

MAX_SUBSTITUTES = 32  # Consecutive unreadable training records tolerated.
_warned_lock = threading.Lock()
_warned: set[str] = set()


def _warn_once(what: str, error: Exception, action: str) -> None:
  with _warned_lock:
    if what in _warned:
      return
    _warned.add(what)
  message = str(error).splitlines()[0] if str(error) else ''
  logging.warning('Unreadable image %s (%s: %s); %s.', what,
                  type(error).__name__, message[:200], action)


@dataclasses.dataclass(frozen=True)
class Plan:
  """What the records of one process are, and in which order."""
  train: bool
  num_examples: int
  shard_start: int  # Evaluation: this process's contiguous shard.
  shard_size: int
  epoch_length: int  # Stream positions per epoch (a multiple of batch_size).
  seed: int
  shuffle: bool
  batch_size: int = 1  # Per process.
  global_batch_size: int = 1
  process_index: int = 0


class LoadRecord:
  """Stream index -> {'image', 'label', 'mask'} (picklable for workers)."""

  def __init__(self, source: sources.Source,
               preprocessor: preprocess.Preprocessor, plan: Plan):
    self._source = source
    self._preprocessor = preprocessor
    self._plan = plan
    self._epoch_seeds: dict[int, int] = {}

  def _epoch_seed(self, epoch: int) -> int:
    """A uint32 seed per epoch."""
    seed = self._epoch_seeds.get(epoch)
    if seed is None:
      seed = int(np.random.SeedSequence(
          (self._plan.seed, epoch + 1)).generate_state(1)[0])
      self._epoch_seeds[epoch] = seed
    return seed

  def global_position(self, index: int) -> tuple[int, int]:
    """(epoch, position in the epoch's permutation) of this process's
    stream index `index` (training)."""
    plan = self._plan
    step, j = divmod(index, plan.batch_size)
    position = (step * plan.global_batch_size +
                plan.process_index * plan.batch_size + j)
    per_epoch = plan.epoch_length // plan.batch_size * plan.global_batch_size
    return divmod(position, per_epoch)

  def record_index(self, epoch: int, position: int) -> int:
    """The record (index into the source) at global `position` of `epoch`:
    a seeded permutation of all records, new every epoch."""
    plan = self._plan
    position %= plan.num_examples
    if not plan.shuffle:
      return position
    return grain.experimental.index_shuffle(
        position, max_index=plan.num_examples - 1,
        seed=self._epoch_seed(epoch), rounds=4)

  def _example(self, record: int, rng: np.random.Generator | None,
               action: str | None = None) -> dict[str, Any] | None:
    try:
      image, label = self._source[record]
      array = self._preprocessor(image, rng)
    except Exception as e:  # pylint: disable=broad-except
      _warn_once(self._source.describe(record), e, action or (
          'training uses the next record of the epoch instead'
          if self._plan.train else 'evaluation masks it out'))
      return None
    return {'image': array, 'label': np.int32(label), 'mask': np.True_}

  def _padding(self) -> dict[str, Any]:
    return {'image': np.zeros(self._preprocessor.output_shape, np.float32),
            'label': np.int32(0), 'mask': np.False_}

  def __call__(self, index: int, unused_value: Any) -> dict[str, Any]:
    plan = self._plan
    if not plan.train:
      if index >= plan.shard_size:
        return self._padding()
      example = self._example(plan.shard_start + index, None)
      return self._padding() if example is None else example
    epoch, position = self.global_position(index)
    for attempt in range(MAX_SUBSTITUTES + 1):
      record = self.record_index(epoch, position + attempt)
      rng = np.random.default_rng((plan.seed, epoch, record))
      example = self._example(record, rng)
      if example is not None:
        return example
    raise ValueError(
        f'{MAX_SUBSTITUTES + 1} consecutive training records are unreadable'
        f' (last: {self._source.describe(record)}); check the data.')


def even_split(num_examples: int,
               options: grain.sharding.ShardOptions) -> tuple[int, int]:
  """[start, end) of shard `options.shard_index` of `num_examples` records.

  Contiguous shards of num_examples // shard_count records; the remainder
  goes one each to the first shards, or is dropped when
  `options.drop_remainder` (then all shards have the same size).
  """
  size, remainder = divmod(num_examples, options.shard_count)
  start = size * options.shard_index
  end = start + size
  if not options.drop_remainder:
    start += min(options.shard_index, remainder)
    end += min(options.shard_index + 1, remainder)
  return start, end
