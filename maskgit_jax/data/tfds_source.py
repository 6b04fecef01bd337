"""A TensorFlow Datasets data set, read with `tfds.data_source` (no TensorFlow).

The data set must have been prepared in the array_record file format.
Preparing ImageNet needs TensorFlow (only then; reading does not):

  pip install tensorflow tensorflow-datasets
  tfds build imagenet2012 --manual_dir=DIR_WITH_THE_TARS \\
      --data_dir=~/tensorflow_datasets --file_format=array_record

with DIR_WITH_THE_TARS holding ILSVRC2012_img_train.tar and
ILSVRC2012_img_val.tar (and optionally ILSVRC2012_img_test.tar) from
https://image-net.org/download-images.
"""
import os
from typing import Any

import numpy as np

PREPARE_HINT = (
    'Prepare it once (this needs TensorFlow, reading does not): `pip install '
    'tensorflow` then `tfds build {name} --data_dir={data_dir} '
    '--file_format=array_record` (for imagenet2012 add --manual_dir=DIR, DIR '
    'holding ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar); or set '
    'config.data.path to the TFDS data_dir that holds it.')


def _data_dir_for_messages(data_dir: str | None) -> str:
  if data_dir:
    return data_dir
  return os.environ.get('TFDS_DATA_DIR', '~/tensorflow_datasets')


class TfdsSource:
  """Records (encoded bytes or decoded uint8 array, label) of a TFDS split.

  Attributes:
    name, split: the TFDS name and split.
  """

  def __init__(self, name: str, split: str, *, data_dir: str | None = None,
               image_key: str = 'image', label_key: str | None = 'label',
               decode_with_pil: bool = True):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    self.name = name
    self.split = split
    self._image_key = image_key
    self._label_key = label_key
    decoders = None
    if decode_with_pil:
      decoders = {image_key: tfds.decode.SkipDecoding()}
    try:
      self._source = tfds.data_source(
          name, split=split, data_dir=data_dir, download=False,
          decoders=decoders)
    except tfds.core.registered.DatasetNotFoundError:
      raise ValueError(
          f'Unknown TFDS data set config.data.name={name!r}.') from None
    except Exception as e:  # pylint: disable=broad-except
      raise self._explain(e, tfds, data_dir) from None
    features = self._source.dataset_info.features
    if image_key not in features:
      raise ValueError(
          f'TFDS data set {name!r} has no feature {image_key!r} '
          f'(config.data.image_key); it has {sorted(features)}.')
    if label_key is None:
      self.num_classes, self.class_names, self.conditional = 1, (name,), False
    else:
      if label_key not in features or not hasattr(features[label_key],
                                                  'num_classes'):
        raise ValueError(
            f'TFDS data set {name!r} has no class label feature {label_key!r}'
            f' (config.data.label_key; None for unconditional data); it has '
            f'{sorted(features)}.')
      self.num_classes = int(features[label_key].num_classes)
      self.class_names = tuple(features[label_key].names)
      self.conditional = True

  def _explain(self, error: Exception, tfds: Any,
               data_dir: str | None) -> Exception:
    """Turns a tfds.data_source failure into a one-line, actionable error."""
    where = _data_dir_for_messages(data_dir)
    hint = PREPARE_HINT.format(name=self.name, data_dir=where)
    try:
      builder = tfds.builder(self.name, data_dir=data_dir)
      prepared = builder.is_prepared()
      file_format = builder.info.file_format
    except Exception:  # pylint: disable=broad-except
      prepared, file_format = False, None
    if not prepared:
      return FileNotFoundError(
          f'TFDS data set {self.name!r} is not prepared in {where}. {hint}')
    if isinstance(error, ValueError) and 'split' in str(error).lower():
      return ValueError(f'TFDS data set {self.name!r}: '
                        f'{str(error).splitlines()[0]}')
    if file_format is not None and 'array_record' not in str(file_format):
      return ValueError(
          f'TFDS data set {self.name!r} in {where} is stored as '
          f'{file_format}; random access needs array_record. Rebuild it with'
          ' `tfds build ... --file_format=array_record` or convert it with '
          '`tfds convert_format --dataset_dir=DIR '
          '--out_file_format=array_record` (both need TensorFlow).')
    return ValueError(f'Cannot read TFDS data set {self.name!r} split '
                      f'{self.split!r} from {where}: '
                      f'{type(error).__name__}: '
                      f'{str(error).splitlines()[0] if str(error) else ""}')

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> tuple[np.ndarray | bytes, int]:
    example = self._source[index]
    image = example[self._image_key]
    if isinstance(image, np.ndarray) and image.dtype == object:
      image = image.item()  # Encoded bytes wrapped in a 0-d array.
    label = 0 if self._label_key is None else int(example[self._label_key])
    return image, label

  def describe(self, index: int) -> str:
    return f'{self.name}[{self.split}] #{index}'
