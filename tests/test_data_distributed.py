"""Tests of global array creation on the 8 simulated CPU devices."""
import jax
import numpy as np
import pytest

from maskgit_jax import data


def mesh8():
  return jax.make_mesh((8,), ('data',),
                       axis_types=(jax.sharding.AxisType.Auto,))


def fake_batch(b):
  rng = np.random.default_rng(0)
  return {'image': rng.random((b, 4, 4, 3), dtype=np.float32),
          'label': np.arange(b, dtype=np.int32),
          'mask': np.arange(b) % 3 != 0}


def test_global_arrays_on_8_devices():
  assert jax.device_count() == 8
  sharding = data.make_data_sharding(mesh8())
  assert sharding.spec == jax.sharding.PartitionSpec(('data',))
  batch = fake_batch(16)
  out = data.to_global_array(batch, sharding)
  for key, value in batch.items():
    array = out[key]
    assert isinstance(array, jax.Array)
    assert array.shape == value.shape and array.dtype == value.dtype
    np.testing.assert_array_equal(np.asarray(array), value)
    assert len(array.addressable_shards) == 8
    for shard in array.addressable_shards:
      assert shard.data.shape == (2,) + value.shape[1:]
      np.testing.assert_array_equal(np.asarray(shard.data), value[shard.index])
  # The batch dimension is split, the rest is replicated.
  assert out['image'].sharding.spec == jax.sharding.PartitionSpec(
      ('data',), None, None, None)
  # A jitted function consumes them without resharding errors.
  total = jax.jit(lambda b: (b['image'].sum(axis=(1, 2, 3)) * b['mask']).sum())
  np.testing.assert_allclose(
      total(out), (batch['image'].sum(axis=(1, 2, 3)) * batch['mask']).sum(),
      rtol=1e-5)


def test_full_rank_sharding_spec_and_two_axis_mesh():
  mesh = jax.make_mesh((4, 2), ('data', 'model'),
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)
  sharding = jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec('data', None, None, None))
  out = data.to_global_array(fake_batch(8), sharding)
  assert out['label'].sharding.spec == jax.sharding.PartitionSpec('data')
  shard = out['label'].addressable_shards[0]
  assert shard.data.shape == (2,)  # 8 over the 4 'data' devices.


def test_pipeline_batches_to_global_arrays(tmp_path):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  for i in range(20):
    Image.new('RGB', (8, 8), (i, 0, 0)).save(tmp_path / f'{i:02d}.png')
  ds = data.create_dataset({'source': 'folder', 'path': str(tmp_path),
                            'image_size': 8}, 'train', 16)
  assert ds.process_index == 0 and ds.process_count == 1  # From JAX.
  batch = next(ds.iterator())
  out = data.to_global_array(batch, data.make_data_sharding(mesh8()))
  assert out['image'].shape == (16, 8, 8, 3)
  np.testing.assert_array_equal(np.asarray(out['image']), batch['image'])


def test_errors():
  sharding = data.make_data_sharding(mesh8())
  with pytest.raises(ValueError, match='not divisible by the 8 devices'):
    data.to_global_array(fake_batch(12), sharding)
  with pytest.raises(ValueError, match='common leading dimension'):
    data.to_global_array({'a': np.zeros(8), 'b': np.zeros(16)}, sharding)
  with pytest.raises(ValueError, match='not axes of the mesh'):
    data.make_data_sharding(mesh8(), ('batch',))
