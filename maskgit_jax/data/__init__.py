"""Input pipeline: Fashion-MNIST, image folders and TFDS data sets.

  from maskgit_jax import data

  ds = data.create_dataset(config.data, 'train', global_batch_size=128,
                           cache_dir=workdir)
  it = ds.iterator()                 # or ds.iterator(saved_state)
  batch = next(it)                   # {'image': f32 [b, H, W, C] in [0, 1],
                                     #  'label': i32 [b], 'mask': bool [b]}
  state = it.get_state()             # JSON-serialisable dict
  batch = data.to_global_array(batch, data.make_data_sharding(mesh))

`config.data` fields: see maskgit_jax.data.config; batches, epochs, sharding
and resuming: see maskgit_jax.data.pipeline.
"""
from maskgit_jax.data.config import get_config
from maskgit_jax.data.distributed import make_data_sharding
from maskgit_jax.data.distributed import to_global_array
from maskgit_jax.data.fashion_mnist import (
    CLASS_NAMES as FASHION_MNIST_CLASS_NAMES)
from maskgit_jax.data.pipeline import create_dataset
from maskgit_jax.data.pipeline import DataIterator
from maskgit_jax.data.pipeline import Dataset
from maskgit_jax.data.pipeline import TooFewRecords

__all__ = [
    'get_config', 'make_data_sharding', 'to_global_array',
    'FASHION_MNIST_CLASS_NAMES', 'create_dataset', 'DataIterator', 'Dataset',
    'TooFewRecords',
]
