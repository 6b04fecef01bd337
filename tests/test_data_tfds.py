"""Tests of the TFDS source: mocked imagenet2012 and real array_record files,
both read without TensorFlow."""
import io
import sys
import tempfile

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from maskgit_jax import data
from maskgit_jax.data import tfds_source

COLOURS = ((255, 0, 0), (0, 255, 0), (0, 0, 255))


class MaskgitTestImages(tfds.core.GeneratorBasedBuilder):
  """A tiny image classification data set written without TensorFlow."""

  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(encoding_format='jpeg'),
            'label': tfds.features.ClassLabel(names=['red', 'green', 'blue']),
        }))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples(9),
            'validation': self._generate_examples(4)}

  def _generate_examples(self, n):
    for i in range(n):
      buf = io.BytesIO()
      # Sizes vary; the image is one solid colour given by the label.
      Image.new('RGB', (40 + i, 30), COLOURS[i % 3]).save(buf, 'JPEG',
                                                          quality=95)
      buf.seek(0)  # Encoded bytes: no TensorFlow needed to write.
      yield i, {'image': buf, 'label': i % 3}


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp('tfds')
  builder = MaskgitTestImages(data_dir=str(path), file_format='array_record')
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      compute_stats=tfds.download.ComputeStatsMode.SKIP))
  return str(path)


@pytest.fixture(scope='module', autouse=True)
def _temporary_files_here(tmp_path_factory):
  """TFDS leaves an empty `mkdtemp('tfds')` folder in the system temporary
  directory whenever it builds a builder for a folder without the data set's
  info (`initialize_from_bucket`): this module's go under pytest's."""
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(tempfile, 'tempdir', str(tmp_path_factory.mktemp('tmp')))
    yield


@pytest.mark.parametrize('decode', ['pil', 'tfds'])
def test_array_record_without_tensorflow(data_dir, decode):
  config = {'source': 'tfds', 'name': 'maskgit_test_images', 'path': data_dir,
            'image_size': 16, 'tfds_decode': decode, 'shuffle': False}
  ds = data.create_dataset(config, 'train', 3, process_index=0,
                           process_count=1)
  assert ds.num_examples == 9 and ds.steps_per_epoch == 3
  assert ds.class_names == ('red', 'green', 'blue') and ds.num_classes == 3
  labels = []
  for batch in ds.iterator():
    if len(labels) == 9:
      break
    assert batch['image'].shape == (3, 16, 16, 3)
    means = batch['image'].mean(axis=(1, 2))  # The colour is the label.
    np.testing.assert_allclose(means, np.eye(3)[batch['label']], atol=0.03)
    labels.extend(batch['label'].tolist())
  assert sorted(labels) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
  evaluation = data.create_dataset(config, 'eval', 3, process_index=0,
                                   process_count=1)
  batches = list(evaluation.iterator())
  assert len(batches) == 2 and batches[1]['mask'].tolist() == [True, False,
                                                               False]
  assert 'tensorflow' not in sys.modules


def test_raw_bytes_with_pil_decoding(data_dir):
  source = tfds_source.TfdsSource('maskgit_test_images', 'train',
                                  data_dir=data_dir, decode_with_pil=True)
  decoded = tfds_source.TfdsSource('maskgit_test_images', 'train',
                                   data_dir=data_dir, decode_with_pil=False)
  for i in range(len(source)):
    image, label = source[i]
    assert isinstance(image, bytes) and image[:2] == b'\xff\xd8'  # JPEG.
    array = np.asarray(Image.open(io.BytesIO(image)))
    np.testing.assert_allclose(array.mean(axis=(0, 1)), COLOURS[label],
                               atol=3)
    same, same_label = decoded[i]
    assert isinstance(same, np.ndarray) and same_label == label
    np.testing.assert_array_equal(same, array)


def test_mock_imagenet2012():
  # mock_data serves decoded random examples; asking TFDS for the encoded
  # bytes (tfds_decode='pil') would make the mock encode images with
  # TensorFlow, so the mock is read with tfds_decode='tfds'.
  with tfds.testing.mock_data(num_examples=10,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    config = {'source': 'tfds', 'name': 'imagenet2012', 'tfds_decode': 'tfds',
              'image_size': 32}
    ds = data.create_dataset(config, 'train', 4, process_index=0,
                             process_count=1)
    assert ds.num_examples == 10 and ds.num_classes == 1000
    assert ds.class_names[0] == 'n01440764'
    it = ds.iterator()
    batch = next(it)
    assert batch['image'].shape == (4, 32, 32, 3)
    assert batch['image'].dtype == np.float32
    assert ((batch['label'] >= 0) & (batch['label'] < 1000)).all()
    state = it.get_state()
    after = next(it)
    np.testing.assert_array_equal(next(ds.iterator(state))['image'],
                                  after['image'])
    evaluation = data.create_dataset(config, 'eval', 4, process_index=1,
                                     process_count=2)
    assert evaluation.shard_size == 5 and evaluation.steps_per_epoch == 3
  assert 'tensorflow' not in sys.modules


def test_not_prepared_says_how(tmp_path):
  with pytest.raises(FileNotFoundError,
                     match='not prepared.*tfds build imagenet2012'):
    data.create_dataset({'source': 'tfds', 'name': 'imagenet2012',
                         'path': str(tmp_path)}, 'train', 8,
                        process_index=0, process_count=1)


def test_unknown_name_and_split(data_dir):
  with pytest.raises(ValueError, match="'no_such_data_set'"):
    data.create_dataset({'source': 'tfds', 'name': 'no_such_data_set'},
                        'train', 8, process_index=0, process_count=1)
  with pytest.raises(ValueError, match="Unknown split 'test'"):
    data.create_dataset({'source': 'tfds', 'name': 'maskgit_test_images',
                         'path': data_dir, 'eval_split': 'test'}, 'eval', 8,
                        process_index=0, process_count=1)
  with pytest.raises(ValueError, match="no class label feature 'class'"):
    data.create_dataset({'source': 'tfds', 'name': 'maskgit_test_images',
                         'path': data_dir, 'label_key': 'class'}, 'train', 3,
                        process_index=0, process_count=1)
