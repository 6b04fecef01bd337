"""The input pipeline: sharding, epochs, order, batching, resumable iterators.

`create_dataset(config.data, split, global_batch_size)` returns a `Dataset`;
`Dataset.iterator()` yields per-process batches

  {'image': float32 [b, H, W, C] in [0, 1],
   'label': int32 [b],
   'mask':  bool [b]}       (True for real records)

with b = global_batch_size / process_count.

Sharding. Training batches do not depend on the number of processes: every
epoch is one seeded permutation of all N records (`shuffle=False` keeps the
source order); global batch k is positions [k*B, (k+1)*B) of it, and process
p takes the slice [p*b, (p+1)*b) of that batch. So 1 process with batch B
and P processes with B/P each see the same global batches, and a run can be
resumed on a different number of hosts. N mod B records (a different
remainder every epoch) are left out of each epoch. Evaluation: contiguous
shards in source order, differing by at most one record; every shard is
padded to the same number of batches (see below).

Training ('train'): epochs repeat forever (or `num_epochs`); a batch never
spans two epochs: `steps_per_epoch = N // B`. All masks are True.

Randomness. The crop and flip of a record use an RNG seeded with (seed,
epoch, record index) only, so they do not depend on the process count,
threads or workers, and survive restoring.

Determinism and resuming. Batch k of a process is a pure function of (config,
k). `iterator.get_state()` is a small JSON-serialisable dict (the next batch
index plus a fingerprint of what fixes the order); `set_state` (or
`dataset.iterator(state)`) continues with exactly the batches an
uninterrupted iterator would have produced, whatever read_threads or
worker_count.

Unreadable images found only when loading (e.g. a truncated JPEG that passed
the header check; a warning names each file once): in training the record is
replaced by the next record of the same epoch's permutation (so the batch
keeps its size); in evaluation it becomes a padding example (mask False).
"""
import math
from typing import Any

import grain
import ml_collections
import numpy as np

from maskgit_jax.data import config as config_lib
from maskgit_jax.data import preprocess
from maskgit_jax.data import record_stream
from maskgit_jax.data import sources

_STATE_FORMAT = 1


class TooFewRecords(ValueError):
  """Training data smaller than one global batch."""

  def __init__(self, num_examples: int, global_batch_size: int,
               batch_key: str = 'global_batch_size'):
    self.num_examples = num_examples
    self.global_batch_size = global_batch_size
    super().__init__(
        f'The training data has {num_examples} records, fewer than the '
        f'global batch size {global_batch_size}. Use a smaller {batch_key} '
        'or more data.')


def _fingerprint(cfg: ml_collections.FrozenConfigDict, split: str,
                 num_examples: int, global_batch_size: int,
                 process_index: int, process_count: int) -> dict[str, Any]:
  """What fixes the batch sequence; checked when restoring a state."""
  keys = ('source', 'name', 'train_split', 'eval_split', 'seed', 'shuffle',
          'num_epochs', 'image_size', 'channels', 'random_crop', 'crop_scale',
          'crop_ratio', 'random_flip', 'eval_crop_fraction', 'resize_method',
          'pad', 'max_examples')
  fp = {k: cfg[k] for k in keys}
  fp['crop_scale'] = list(fp['crop_scale'])
  fp['crop_ratio'] = list(fp['crop_ratio'])
  fp.update(split=split, num_examples=num_examples,
            global_batch_size=global_batch_size)
  if split != 'train':  # Training batches do not depend on the processes.
    fp.update(process_index=process_index, process_count=process_count)
  return fp


class Dataset:
  """One split of the configured data, for one process (see module doc).

  Attributes:
    config: the resolved `config.data`.
    split: 'train' or 'eval'.
    num_examples: records in the split (all processes together).
    num_classes, class_names, conditional: from the source.
    global_batch_size, batch_size: global and per-process batch sizes.
    process_index, process_count: this process and the number of processes.
    shard_size: records read by this process per epoch (before padding).
    steps_per_epoch: batches per epoch ('train') or per pass ('eval'); the
      same on every process.
    image_shape: (H, W, C) of the images.
    source: the record source.
  """

  def __init__(self, config: Any, split: str, global_batch_size: int, *,
               cache_dir: str | None = None, process_index: int | None = None,
               process_count: int | None = None):
    if split not in ('train', 'eval'):
      raise ValueError(f"split must be 'train' or 'eval', got {split!r}.")
    if process_index is None or process_count is None:
      import jax  # pylint: disable=g-import-not-at-top
      process_index = (jax.process_index() if process_index is None
                       else process_index)
      process_count = (jax.process_count() if process_count is None
                       else process_count)
    shard_options = grain.sharding.ShardOptions(
        shard_index=process_index, shard_count=process_count,
        drop_remainder=split == 'train')  # Checks the index and count.
    if global_batch_size < 1 or global_batch_size % process_count:
      raise ValueError(
          f'global_batch_size {global_batch_size} must be a positive multiple'
          f' of the process count {process_count}.')
    self.config = cfg = config_lib.resolve(config)
    self.split = split
    self.global_batch_size = global_batch_size
    self.batch_size = batch = global_batch_size // process_count
    self.process_index = process_index
    self.process_count = process_count
    self.source = sources.make_source(cfg, split, cache_dir=cache_dir)
    self.num_examples = len(self.source)
    self.num_classes = self.source.num_classes
    self.class_names = tuple(self.source.class_names)
    self.conditional = self.source.conditional
    train = split == 'train'
    if train:
      start = 0
      self.steps_per_epoch = self.num_examples // global_batch_size
      self.shard_size = self.steps_per_epoch * batch
      if self.steps_per_epoch == 0:
        raise TooFewRecords(self.num_examples, global_batch_size)
    else:
      start, end = record_stream.even_split(self.num_examples, shard_options)
      self.shard_size = end - start
      largest_shard = math.ceil(self.num_examples / process_count)
      self.steps_per_epoch = math.ceil(largest_shard / batch)
    self._plan = record_stream.Plan(
        train=train, num_examples=self.num_examples, shard_start=start,
        shard_size=self.shard_size,
        epoch_length=self.steps_per_epoch * batch, seed=cfg.seed,
        shuffle=train and cfg.shuffle, batch_size=batch,
        global_batch_size=global_batch_size, process_index=process_index)
    self.preprocessor = preprocess.Preprocessor(
        image_size=cfg.image_size, channels=cfg.channels,
        random_crop=cfg.random_crop, crop_scale=cfg.crop_scale,
        crop_ratio=cfg.crop_ratio, random_flip=cfg.random_flip,
        eval_crop_fraction=cfg.eval_crop_fraction,
        resize_method=cfg.resize_method)
    self.image_shape = self.preprocessor.output_shape
    self._load = record_stream.LoadRecord(self.source, self.preprocessor,
                                          self._plan)
    self.fingerprint = _fingerprint(cfg, split, self.num_examples,
                                    global_batch_size, process_index,
                                    process_count)

  @property
  def num_batches(self) -> int | None:
    """Batches until the iterator stops: None for endless training."""
    if self.split == 'eval':
      return self.steps_per_epoch
    if self.config.num_epochs is None:
      return None
    return self.steps_per_epoch * self.config.num_epochs

  def global_position(self, index: int) -> tuple[int, int]:
    """(epoch, position in the epoch's order) of this process's training
    stream index `index` (batch `index // batch_size`)."""
    return self._load.global_position(index)

  def record_at(self, epoch: int, position: int) -> int:
    """The training record at `position` of `epoch`'s order."""
    return self._load.record_index(epoch, position)

  def record_indices(self, step: int) -> np.ndarray:
    """The source records of this process's batch `step`, before any
    substitution of unreadable records; -1 marks evaluation padding.

    Returns:
      int64 [batch_size].
    """
    b = self.batch_size
    out = np.empty(b, np.int64)
    for j in range(b):
      index = step * b + j
      if self._plan.train:
        out[j] = self._load.record_index(*self._load.global_position(index))
      else:
        out[j] = (self._plan.shard_start + index
                  if index < self.shard_size else -1)
    return out

  def ordered_batches(self, records: np.ndarray, batch_size: int
                      ) -> grain.IterDataset:
    """Batches of the given source records, in the given order, through this
    pipeline (the same loader, threads and preprocessing, evaluation-style:
    no random crop or flip). An unreadable record is a padding example with
    'mask' False. Evaluation reads its fixed random subsets this way."""
    load = self._load

    def example(record):
      out = load._example(int(record), None,  # pylint: disable=protected-access
                          action='evaluation skips it')
      return load._padding() if out is None else out  # pylint: disable=protected-access
    ds = grain.MapDataset.source(np.asarray(records, np.int64)).map(example)
    ds = ds.batch(batch_size, drop_remainder=False)
    threads = config_lib.read_threads(self.config)
    return ds.to_iter_dataset(grain.ReadOptions(
        num_threads=threads,
        prefetch_buffer_size=max(self.config.prefetch_batches, threads)))

  def grain_dataset(self, start_batch: int = 0) -> grain.IterDataset:
    """The grain pipeline of batches start_batch, start_batch + 1, ..."""
    cfg = self.config
    if self._plan.train:
      ds = grain.MapDataset.range(self._plan.epoch_length).repeat(
          cfg.num_epochs)
    else:
      ds = grain.MapDataset.range(self._plan.epoch_length)
    ds = ds.map_with_index(self._load)
    ds = ds.batch(self.batch_size, drop_remainder=True)
    ds = ds[start_batch:]
    threads = config_lib.read_threads(cfg)
    ds = ds.to_iter_dataset(grain.ReadOptions(
        num_threads=threads,
        prefetch_buffer_size=max(cfg.prefetch_batches, threads)))
    if cfg.worker_count > 0:
      _ensure_absl_flags_parsed()
      ds = ds.mp_prefetch(grain.MultiprocessingOptions(
          num_workers=cfg.worker_count,
          per_worker_buffer_size=cfg.prefetch_batches))
    return ds

  def iterator(self, state: dict[str, Any] | None = None) -> 'DataIterator':
    """A new iterator from the first batch, or from a saved `state`."""
    it = DataIterator(self)
    if state is not None:
      it.set_state(state)
    return it

  def __repr__(self) -> str:
    return (f'Dataset({self.config.source}, split={self.split!r}, '
            f'num_examples={self.num_examples}, '
            f'num_classes={self.num_classes}, batch_size={self.batch_size}, '
            f'process={self.process_index}/{self.process_count}, '
            f'steps_per_epoch={self.steps_per_epoch})')


def _ensure_absl_flags_parsed() -> None:
  """grain worker processes read absl flags; outside an absl app (tests,
  notebooks) mark them parsed with their defaults."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


class DataIterator:
  """Iterator over the per-process batches of a `Dataset`; resumable.

  The grain pipeline (threads, worker processes) starts on the first
  `next()`. Use `close()` (or `with`) to stop it early.
  """

  def __init__(self, dataset: Dataset):
    self._dataset = dataset
    self._next_batch = 0
    self._iterator = None

  def __iter__(self) -> 'DataIterator':
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    if self._iterator is None:
      self._iterator = iter(self._dataset.grain_dataset(self._next_batch))
    batch = next(self._iterator)
    self._next_batch += 1
    return batch

  @property
  def step(self) -> int:
    """The index of the next batch."""
    return self._next_batch

  def get_state(self) -> dict[str, Any]:
    """A JSON-serialisable state: the next batch index and a fingerprint."""
    return {'format': _STATE_FORMAT, 'next_batch': self._next_batch,
            'fingerprint': dict(self._dataset.fingerprint)}

  def set_state(self, state: dict[str, Any] | str | bytes) -> None:
    """Continues from a state of `get_state` (a dict, or its JSON text).

    Raises:
      ValueError: the state is malformed or comes from a pipeline with a
        different order (fingerprint mismatch: the differing fields are
        named).
    """
    if isinstance(state, (str, bytes)):
      import json  # pylint: disable=g-import-not-at-top
      state = json.loads(state)
    if (not isinstance(state, dict) or state.get('format') != _STATE_FORMAT
        or not isinstance(state.get('next_batch'), int)
        or state['next_batch'] < 0):
      raise ValueError(f'Not an input pipeline iterator state: {state!r}.')
    saved = state.get('fingerprint', {})
    current = self._dataset.fingerprint
    differ = sorted(k for k in set(saved) | set(current)
                    if _normalise(saved.get(k)) != _normalise(current.get(k)))
    if differ:
      details = ', '.join(
          f'{k}: saved {saved.get(k)!r}, now {current.get(k)!r}'
          for k in differ)
      raise ValueError(
          'The iterator state comes from a different input pipeline '
          f'({details}); restoring it would not continue the same sequence. '
          'Start a fresh iterator to change these settings.')
    self.close()
    self._next_batch = state['next_batch']

  def close(self) -> None:
    """Stops the pipeline's threads and worker processes, if started."""
    iterator, self._iterator = self._iterator, None
    if iterator is not None and hasattr(iterator, 'close'):
      iterator.close()

  def __enter__(self) -> 'DataIterator':
    return self

  def __exit__(self, *unused_exc) -> None:
    self.close()


def _normalise(value: Any) -> Any:
  if isinstance(value, (list, tuple)):
    return [_normalise(v) for v in value]
  return value


def create_dataset(config: Any, split: str, global_batch_size: int, *,
                   cache_dir: str | None = None,
                   process_index: int | None = None,
                   process_count: int | None = None) -> Dataset:
  """Creates the input pipeline of `split` from `config.data`.

  Args:
    config: `config.data` (ConfigDict or mapping; missing fields take the
      defaults of `maskgit_jax.data.get_config()`; unknown fields are an
      error).
    split: 'train' or 'eval' (the source's split names are config fields).
    global_batch_size: examples per step over all processes.
    cache_dir: where the image folder index is cached (the run's workdir).
    process_index, process_count: this process and the process count;
      default jax.process_index() and jax.process_count() (pass them to
      simulate several processes).

  Returns:
    A `Dataset`; `dataset.iterator()` yields per-process batches.
  """
  return Dataset(config, split, global_batch_size, cache_dir=cache_dir,
                 process_index=process_index, process_count=process_count)
