"""Tests of the pipeline: order, epochs, shards, resuming, padding, errors."""
import io
import json
import os

from absl import logging
import numpy as np
from PIL import Image
import pytest

from maskgit_jax import data
from maskgit_jax.data import fashion_mnist
from maskgit_jax.data import idx
from maskgit_jax.data import pipeline


def write_fashion_mnist(folder, num_train=30, num_test=12):
  """Fake Fashion-MNIST: image i has pixels [0, 0], [0, 1] = i % 256, i // 256
  and label i % 10."""
  os.makedirs(folder, exist_ok=True)
  for prefix, n in (('train', num_train), ('t10k', num_test)):
    images = np.zeros((n, 28, 28), np.uint8)
    images[:, 0, 0] = np.arange(n) % 256
    images[:, 0, 1] = np.arange(n) // 256
    images[:, 5:20, 8:12] = 255  # Asymmetric: flips and crops show.
    labels = (np.arange(n) % 10).astype(np.uint8)
    idx.write(os.path.join(folder, f'{prefix}-images-idx3-ubyte.gz'), images)
    idx.write(os.path.join(folder, f'{prefix}-labels-idx1-ubyte.gz'), labels)


@pytest.fixture
def fmnist(tmp_path):
  write_fashion_mnist(tmp_path / 'fmnist')
  return str(tmp_path / 'fmnist')


def plain(path, **kwargs):
  """Config without augmentation: images are the padded records as is."""
  return dict(path=path, random_crop=False, random_flip=False, **kwargs)


def record_ids(images):
  """Record indices from the signature pixels of unaugmented images."""
  px = np.rint(images[:, 2, 2:4, 0] * 255).astype(int)  # Padding is 2.
  return px[:, 0] + 256 * px[:, 1]


def take(iterator, n):
  return [next(iterator) for _ in range(n)]


def assert_same_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def test_batch_format(fmnist):
  ds = data.create_dataset({'path': fmnist}, 'train', 8, process_index=0,
                           process_count=1)
  assert ds.num_classes == 10
  assert ds.class_names == data.FASHION_MNIST_CLASS_NAMES
  assert ds.class_names[0] == 'T-shirt/top' and ds.conditional
  assert ds.num_examples == 30 and ds.steps_per_epoch == 3
  batch = next(ds.iterator())
  assert batch['image'].shape == (8, 32, 32, 3)
  assert batch['image'].dtype == np.float32
  assert 0.0 <= batch['image'].min() and batch['image'].max() <= 1.0
  assert batch['image'].max() == 1.0
  assert batch['label'].dtype == np.int32 and batch['label'].shape == (8,)
  assert batch['mask'].dtype == np.bool_ and batch['mask'].all()
  one = data.create_dataset({'path': fmnist, 'channels': 1, 'image_size': 16},
                            'eval', 4, process_index=0, process_count=1)
  assert next(one.iterator())['image'].shape == (4, 16, 16, 1)
  assert one.image_shape == (16, 16, 1)


def test_fashion_mnist_padding_option(fmnist):
  unpadded = data.create_dataset(plain(fmnist, pad=False, image_size=28),
                                 'eval', 4, process_index=0, process_count=1)
  image = next(unpadded.iterator())['image'][3, :, :, 0]
  assert image[0, 0] == np.float32(3 / 255)  # The raw 28x28 record 3.
  assert image[5:20, 8:12].min() == 1.0
  padded = data.create_dataset(plain(fmnist, image_size=64), 'eval', 4,
                               process_index=0, process_count=1)
  image = next(padded.iterator())['image'][0]
  # Padded to 32 (2-pixel border) then upsampled 2x: a 4-pixel black border.
  assert image[:3].max() == 0 and image[:, :3].max() == 0
  assert image[61:].max() == 0 and image[:, 61:].max() == 0
  assert image[16:42, 22:26].min() > 0.9  # The bar, 2x larger.


def test_labels_match_records_and_epochs_are_permutations(fmnist):
  ds = data.create_dataset(plain(fmnist), 'train', 4, process_index=0,
                           process_count=1)
  assert ds.steps_per_epoch == 7  # 30 // 4: 2 records dropped per epoch.
  batches = take(ds.iterator(), 21)
  ids = np.stack([record_ids(b['image']) for b in batches])
  for step, b in enumerate(batches):
    np.testing.assert_array_equal(ids[step], ds.record_indices(step))
    np.testing.assert_array_equal(b['label'], ids[step] % 10)
  epochs = ids.reshape(3, 28)
  for epoch in epochs:
    assert len(set(epoch.tolist())) == 28  # No repeats within an epoch.
  assert not np.array_equal(epochs[0], epochs[1])  # Reshuffled.
  # A different remainder is dropped each epoch: over 10 epochs, all are seen.
  ten = np.concatenate([ds.record_indices(step) for step in range(70)])
  assert set(ten.tolist()) == set(range(30))
  no_shuffle = data.create_dataset(plain(fmnist, shuffle=False), 'train', 4,
                                   process_index=0, process_count=1)
  ids = [record_ids(b['image']) for b in take(no_shuffle.iterator(), 8)]
  np.testing.assert_array_equal(np.concatenate(ids),
                                list(range(28)) + [0, 1, 2, 3])


def test_seed_fixes_order_and_augmentation(fmnist):
  def first(seed):
    ds = data.create_dataset({'path': fmnist, 'seed': seed}, 'train', 8,
                             process_index=0, process_count=1)
    return take(ds.iterator(), 4)

  a = first(3)
  assert_same_batches(a, first(3))
  b = first(4)
  assert not np.array_equal(a[0]['label'], b[0]['label'])
  assert not np.array_equal(a[0]['image'], b[0]['image'])


@pytest.mark.parametrize('threads_before,threads_after', [(0, 2), (2, 0)])
def test_save_restore_continue(fmnist, threads_before, threads_after):
  config = {'path': fmnist, 'seed': 7, 'read_threads': threads_before}
  ds = data.create_dataset(config, 'train', 4, process_index=0,
                           process_count=1)
  uninterrupted = take(ds.iterator(), 16)  # Crosses two epoch boundaries.

  it = ds.iterator()
  take(it, 5)
  state = json.loads(json.dumps(it.get_state()))
  it.close()
  assert state['next_batch'] == 5

  config['read_threads'] = threads_after
  resumed = data.create_dataset(config, 'train', 4, process_index=0,
                                process_count=1)
  it = resumed.iterator(state)
  assert_same_batches(take(it, 11), uninterrupted[5:])
  # set_state on a running iterator rewinds it, from JSON text too.
  it.set_state(json.dumps(state))
  assert_same_batches(take(it, 2), uninterrupted[5:7])


def test_state_from_a_different_pipeline_is_refused(fmnist):
  ds = data.create_dataset({'path': fmnist}, 'train', 4, process_index=0,
                           process_count=1)
  state = ds.iterator().get_state()
  other = data.create_dataset({'path': fmnist}, 'train', 8, process_index=0,
                              process_count=1)
  with pytest.raises(ValueError, match='global_batch_size'):
    other.iterator(state)
  with pytest.raises(ValueError, match='Not an input pipeline'):
    ds.iterator({'next_batch': 3})


@pytest.mark.parametrize('shuffle', [True, False])
def test_train_batches_do_not_depend_on_process_count(fmnist, shuffle):
  config = plain(fmnist, shuffle=shuffle)
  one = data.create_dataset(config, 'train', 8, process_index=0,
                            process_count=1)
  assert one.steps_per_epoch == 3  # 30 records // 8.
  whole = [record_ids(b['image']) for b in take(one.iterator(), 30)]
  parts = []
  for p in range(4):
    ds = data.create_dataset(config, 'train', 8, process_index=p,
                             process_count=4)
    assert ds.batch_size == 2 and ds.steps_per_epoch == 3
    ids = [record_ids(b['image']) for b in take(ds.iterator(), 30)]
    np.testing.assert_array_equal(np.stack(ids),
                                  [ds.record_indices(i) for i in range(30)])
    parts.append(np.stack(ids))
    # The iterator state restores on any process count.
    it = ds.iterator()
    take(it, 5)
    np.testing.assert_array_equal(
        record_ids(next(one.iterator(it.get_state()))['image'])[2 * p:2 * p + 2],
        whole[5][2 * p:2 * p + 2])
  # Global batch k = process batches k side by side, as with one process.
  np.testing.assert_array_equal(np.concatenate(parts, axis=1), np.stack(whole))
  for epoch in range(10):  # Within an epoch no record repeats.
    seen = np.concatenate(whole[3 * epoch:3 * epoch + 3])
    assert len(set(seen.tolist())) == 24
    if not shuffle:
      np.testing.assert_array_equal(seen, np.arange(24))
  if shuffle:  # Each epoch is a new permutation of all 30 records.
    assert len(set(np.concatenate(whole).tolist())) == 30
    assert not np.array_equal(whole[0], whole[3])


def test_eval_shards_cover_everything_once(fmnist):
  ids, steps = [], set()
  for p in range(4):
    ds = data.create_dataset(plain(fmnist), 'eval', 8, process_index=p,
                             process_count=4)
    batches = list(ds.iterator())
    steps.add(len(batches))
    for b in batches:
      got = record_ids(b['image'])
      ids.extend(got[b['mask']].tolist())
      assert (b['image'][~b['mask']] == 0).all()
      assert (b['label'][~b['mask']] == 0).all()
      np.testing.assert_array_equal(b['label'][b['mask']],
                                    got[b['mask']] % 10)
  assert steps == {2}  # 12 records, 3 per process, 2 per batch.
  assert sorted(ids) == list(range(12))


def test_eval_pads_the_last_batch(fmnist):
  ds = data.create_dataset(plain(fmnist), 'eval', 5, process_index=0,
                           process_count=1)
  assert ds.steps_per_epoch == ds.num_batches == 3
  batches = list(ds.iterator())
  assert len(batches) == 3
  assert [b['mask'].sum() for b in batches] == [5, 5, 2]
  np.testing.assert_array_equal(record_ids(batches[2]['image'])[:2], [10, 11])
  assert_same_batches(batches, list(ds.iterator()))  # Each pass is the same.
  np.testing.assert_array_equal(ds.record_indices(2), [10, 11, -1, -1, -1])


def test_num_epochs_stops(fmnist):
  ds = data.create_dataset({'path': fmnist, 'num_epochs': 2}, 'train', 8,
                           process_index=0, process_count=1)
  assert ds.num_batches == 6
  assert len(list(ds.iterator())) == 6


def test_augmentation_does_not_depend_on_process_count(fmnist):
  config = {'path': fmnist, 'crop_scale': (0.3, 0.6)}
  one = data.create_dataset(config, 'train', 6, process_index=0,
                            process_count=1)
  two = data.create_dataset(config, 'train', 6, process_index=1,
                            process_count=2)
  def epoch_zero(ds):
    images = {}
    for step, b in enumerate(take(ds.iterator(), ds.steps_per_epoch)):
      images.update(zip(ds.record_indices(step).tolist(), b['image']))
    return images

  images_one, images_two = epoch_zero(one), epoch_zero(two)
  assert len(images_one) == 30 and len(images_two) == 15
  for r, im in images_two.items():
    np.testing.assert_array_equal(im, images_one[r])
  # And the augmentation does vary: the same record differs across epochs.
  batches = take(one.iterator(), 2 * one.steps_per_epoch)
  by_epoch = [{}, {}]
  for step, b in enumerate(batches):
    for r, im in zip(one.record_indices(step), b['image']):
      by_epoch[step // one.steps_per_epoch][int(r)] = im
  common = set(by_epoch[0]) & set(by_epoch[1])
  assert any(not np.array_equal(by_epoch[0][r], by_epoch[1][r])
             for r in common)


def encode(img, fmt):
  buf = io.BytesIO()
  img.save(buf, fmt)
  return buf.getvalue()


def test_folder_source_and_truncated_file_at_load_time(tmp_path, monkeypatch):
  root = tmp_path / 'images'
  names = []
  for c, colour in (('blue', (0, 0, 255)), ('red', (255, 0, 0))):
    (root / c).mkdir(parents=True)
    for i in range(4):
      (root / c / f'{i}.jpg').write_bytes(
          encode(Image.new('RGB', (40, 30), colour), 'JPEG'))
      names.append(f'{c}/{i}.jpg')
  noise = np.random.default_rng(0).integers(0, 60, (64, 64, 3), np.uint8)
  noise[..., 2] = 255
  good = encode(Image.fromarray(noise), 'JPEG')
  (root / 'blue' / '2.jpg').write_bytes(good[:len(good) // 2])  # Truncated.
  warnings = []
  monkeypatch.setattr(logging, 'warning',
                      lambda msg, *a: warnings.append(msg % a))
  config = {'source': 'folder', 'path': str(root), 'image_size': 16,
            'shuffle': False}
  ds = data.create_dataset(config, 'train', 8, cache_dir=str(tmp_path / 'w'),
                           process_index=0, process_count=1)
  assert ds.class_names == ('blue', 'red') and ds.num_examples == 8
  batch = next(ds.iterator())
  assert batch['mask'].all()
  np.testing.assert_array_equal(batch['label'], [0, 0, 0, 0, 1, 1, 1, 1])
  # Record 2 (truncated) is replaced by record 3, its successor.
  np.testing.assert_array_equal(batch['image'][2], batch['image'][3])
  assert (batch['image'][:4, :, :, 2] > 0.9).all()  # All blue: no zeros.
  assert any('blue/2.jpg' in w and 'Unreadable image' in w for w in warnings)
  assert os.listdir(tmp_path / 'w')  # The index cache was written.

  evaluation = data.create_dataset(config, 'eval', 8, process_index=0,
                                   process_count=1)
  batch = next(evaluation.iterator())
  np.testing.assert_array_equal(
      batch['mask'], [True, True, False, True, True, True, True, True])
  assert (batch['image'][2] == 0).all()


def test_file_deleted_after_indexing(tmp_path, monkeypatch):
  for i in range(6):
    Image.new('L', (8, 8), 40 * i).save(tmp_path / f'{i}.png')
  warnings = []
  monkeypatch.setattr(logging, 'warning',
                      lambda msg, *a: warnings.append(msg % a))
  ds = data.create_dataset(
      {'source': 'folder', 'path': str(tmp_path), 'image_size': 8,
       'shuffle': False, 'random_flip': False, 'random_crop': False},
      'train', 3, process_index=0, process_count=1)
  os.remove(tmp_path / '1.png')
  batch = next(ds.iterator())
  np.testing.assert_allclose(batch['image'][:, 0, 0, 0] * 255, [0, 80, 80],
                             atol=1e-4)
  assert any('1.png' in w for w in warnings)


def test_bad_arguments(fmnist, tmp_path):
  with pytest.raises(ValueError, match="'lmdb'"):
    data.create_dataset({'source': 'lmdb'}, 'train', 8, process_index=0,
                        process_count=1)
  with pytest.raises(ValueError, match='chanels'):
    data.create_dataset({'chanels': 3}, 'train', 8, process_index=0,
                        process_count=1)
  with pytest.raises(ValueError, match="'test'"):
    data.create_dataset({'path': fmnist}, 'test', 8, process_index=0,
                        process_count=1)
  with pytest.raises(ValueError, match='multiple of the process count 3'):
    data.create_dataset({'path': fmnist}, 'train', 8, process_index=0,
                        process_count=3)
  with pytest.raises(ValueError, match='fewer than the global batch size'):
    data.create_dataset({'path': fmnist}, 'train', 64, process_index=0,
                        process_count=1)
  with pytest.raises(ValueError, match='crop_scale'):
    data.create_dataset({'path': fmnist, 'crop_scale': (0.5, 1.5)}, 'train',
                        8, process_index=0, process_count=1)
  with pytest.raises(ValueError, match='channels'):
    data.create_dataset({'path': fmnist, 'channels': 2}, 'train', 8,
                        process_index=0, process_count=1)
  with pytest.raises(ValueError, match='Shard shard_index'):
    data.create_dataset({'path': fmnist}, 'train', 8, process_index=2,
                        process_count=2)
  with pytest.raises(FileNotFoundError, match='apt-get install'):
    data.create_dataset({'path': str(tmp_path / 'none')}, 'train', 8,
                        process_index=0, process_count=1)
  with pytest.raises(FileNotFoundError, match='Image folder not found'):
    data.create_dataset({'source': 'folder', 'path': str(tmp_path / 'none')},
                        'train', 8, process_index=0, process_count=1)


def test_max_examples(fmnist):
  ds = data.create_dataset(plain(fmnist, max_examples=10, shuffle=False),
                           'train', 5, process_index=0, process_count=1)
  assert ds.num_examples == 10
  ids = np.concatenate([record_ids(b['image'])
                        for b in take(ds.iterator(), 4)])
  np.testing.assert_array_equal(ids, list(range(10)) * 2)


def test_worker_processes_give_the_same_batches(fmnist):
  config = {'path': fmnist, 'worker_count': 1}
  reference = data.create_dataset(dict(config, worker_count=0), 'train', 4,
                                  process_index=0, process_count=1)
  expected = take(reference.iterator(), 6)
  ds = data.create_dataset(config, 'train', 4, process_index=0,
                           process_count=1)
  with ds.iterator() as it:
    assert_same_batches(take(it, 3), expected[:3])
    state = it.get_state()
  with ds.iterator(state) as it:
    assert_same_batches(take(it, 3), expected[3:])


@pytest.mark.skipif(
    not os.path.exists(os.path.join(fashion_mnist.DEFAULT_DIR,
                                    'train-images-idx3-ubyte.gz')),
    reason='dataset-fashion-mnist is not installed')
def test_installed_fashion_mnist_default():
  ds = data.create_dataset(data.get_config(), 'train', 128)
  assert ds.num_examples == 60000 and ds.steps_per_epoch == 468
  batch = next(ds.iterator())
  assert batch['image'].shape == (128, 32, 32, 3)
  assert set(batch['label'].tolist()) <= set(range(10))
  assert pipeline.Dataset is data.Dataset
