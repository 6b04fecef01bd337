"""Tests of the image folder source: layouts, bad files, the index cache."""
import io
import json
import os
import time

from absl import logging
import numpy as np
from PIL import Image
import pytest

from maskgit_jax.data import image_folder


def encode(img, fmt, **kwargs):
  buf = io.BytesIO()
  img.save(buf, fmt, **kwargs)
  return buf.getvalue()


def make_mixed_folder(root):
  """Three classes with mixed formats/modes/sizes plus bad files.

  Returns:
    {relative path: label} of the 9 good images.
  """
  rng = np.random.default_rng(0)

  def rgb(w, h):
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8))

  good = {
      'cat/a.jpg': encode(rgb(50, 30), 'JPEG'),
      'cat/b.PNG': encode(rgb(20, 40).convert('RGBA'), 'PNG'),
      'cat/sub/c.webp': encode(rgb(33, 33), 'WEBP'),
      'dog/d.bmp': encode(rgb(16, 64), 'BMP'),
      'dog/e.gif': encode(rgb(30, 30).convert('P'), 'GIF'),
      'dog/f.png': encode(Image.fromarray(
          rng.integers(0, 65536, (24, 24)).astype(np.uint16)), 'PNG'),
      'emu/g.jpeg': encode(Image.new('CMYK', (40, 40), (0, 50, 0, 0)),
                           'JPEG'),
      'emu/h.png': encode(Image.new('LA', (10, 12), (30, 200)), 'PNG'),
      'emu/i.png': encode(rgb(12, 12).convert('L'), 'PNG'),
  }
  full_jpeg = encode(rgb(64, 64), 'JPEG')
  bad = {
      'cat/zero.png': b'',
      'dog/garbage.jpg': b'this is not a jpeg' * 10,
      'emu/text-as-image.png': b'hello',
  }
  others = {'cat/notes.txt': b'some notes', 'dog/labels.csv': b'a,b\n'}
  hidden = {'.DS_Store': b'junk', 'cat/.hidden.jpg': b'junk',
            '.cache/x.jpg': b'junk'}
  truncated = {'emu/truncated.jpg': full_jpeg[:len(full_jpeg) // 2]}
  for files in (good, bad, others, hidden, truncated):
    for rel, data in files.items():
      path = os.path.join(root, rel)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, 'wb') as f:
        f.write(data)
  labels = {'cat': 0, 'dog': 1, 'emu': 2}
  return {rel: labels[rel.split('/')[0]] for rel in good}


def test_mixed_folder_header_validation(tmp_path):
  good = make_mixed_folder(tmp_path)
  with pytest.MonkeyPatch.context() as mp:
    warnings = []
    mp.setattr(logging, 'warning', lambda msg, *a: warnings.append(msg % a))
    source = image_folder.ImageFolderSource(str(tmp_path))
  assert source.class_names == ('cat', 'dog', 'emu')
  assert source.num_classes == 3 and source.conditional
  # The truncated JPEG passes the header check (found when loading).
  expected = dict(good, **{'emu/truncated.jpg': 2})
  assert dict(zip(source.files, source.labels.tolist())) == expected
  assert source.files == sorted(expected)
  path, label = source[source.files.index('dog/d.bmp')]
  assert path == os.path.join(str(tmp_path), 'dog/d.bmp') and label == 1
  assert source.num_skipped == 3
  assert len(warnings) == 1
  assert '3 unreadable image files' in warnings[0]
  assert '2 non-image files' in warnings[0]
  assert 'zero-byte' in warnings[0]


def test_full_validation_skips_truncated(tmp_path):
  good = make_mixed_folder(tmp_path)
  source = image_folder.ImageFolderSource(str(tmp_path), validate='full')
  assert dict(zip(source.files, source.labels.tolist())) == good
  assert source.num_skipped == 4


def test_skipped_files_are_warned_once_per_process(tmp_path, monkeypatch):
  make_mixed_folder(tmp_path)
  monkeypatch.setattr(image_folder, '_WARNED', set())
  warned = []
  monkeypatch.setattr(logging, 'warning',
                      lambda fmt, *args: warned.append(fmt % args))
  for _ in range(3):  # stage 1, stage 2, the evaluation
    image_folder.ImageFolderSource(str(tmp_path))
  assert len(warned) == 1 and 'skipped 3 unreadable' in warned[0], warned
  (tmp_path / 'cat' / 'new.txt').write_text('x')  # other skipped files
  image_folder.ImageFolderSource(str(tmp_path))
  assert len(warned) == 2


def test_flat_folder_is_unconditional(tmp_path):
  root = tmp_path / 'faces'
  root.mkdir()
  for i in range(3):
    (root / f'{i}.png').write_bytes(encode(Image.new('RGB', (8, 8)), 'PNG'))
  source = image_folder.ImageFolderSource(str(root))
  assert len(source) == 3 and not source.conditional
  assert source.num_classes == 1 and source.class_names == ('faces',)
  assert source.labels.tolist() == [0, 0, 0]


def test_missing_and_empty(tmp_path):
  with pytest.raises(FileNotFoundError, match='nowhere'):
    image_folder.ImageFolderSource(str(tmp_path / 'nowhere'))
  (tmp_path / 'file.txt').write_text('x')
  with pytest.raises(ValueError, match='not a folder'):
    image_folder.ImageFolderSource(str(tmp_path / 'file.txt'))
  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(ValueError, match=f'No readable image found in {empty}'):
    image_folder.ImageFolderSource(str(empty))
  (empty / 'broken.jpg').write_bytes(b'')
  with pytest.raises(ValueError, match='1 unreadable'):
    image_folder.ImageFolderSource(str(empty))


def test_class_folder_without_images(tmp_path):
  (tmp_path / 'a').mkdir()
  (tmp_path / 'a' / 'x.png').write_bytes(
      encode(Image.new('RGB', (4, 4)), 'PNG'))
  (tmp_path / 'b').mkdir()
  (tmp_path / 'b' / 'readme.txt').write_text('no images here')
  with pytest.raises(ValueError, match=f'Class folder {tmp_path / "b"} has'):
    image_folder.ImageFolderSource(str(tmp_path))
  # Only unreadable images count as none.
  (tmp_path / 'b' / 'y.jpg').write_bytes(b'garbage')
  with pytest.raises(ValueError, match='has no readable image'):
    image_folder.ImageFolderSource(str(tmp_path))


def test_images_beside_class_folders_are_ignored(tmp_path):
  (tmp_path / 'a').mkdir()
  png = encode(Image.new('RGB', (4, 4)), 'PNG')
  (tmp_path / 'a' / 'x.png').write_bytes(png)
  (tmp_path / 'stray.png').write_bytes(png)
  index = image_folder.build_index(str(tmp_path))
  assert index['files'] == ['a/x.png'] and index['ignored'] == ['stray.png']


def test_index_cache_reused_and_refreshed(tmp_path, monkeypatch):
  root = tmp_path / 'images'
  make_mixed_folder(root)
  cache = tmp_path / 'workdir'
  checked = []
  real_check = image_folder.check_file

  def counting_check(path, level):
    checked.append(os.path.relpath(path, root))
    return real_check(path, level)

  monkeypatch.setattr(image_folder, 'check_file', counting_check)
  first = image_folder.build_index(str(root), cache_dir=str(cache))
  assert not first['from_cache'] and len(checked) == 13
  cache_files = os.listdir(cache)
  assert len(cache_files) == 1 and cache_files[0].endswith('.json')
  assert json.loads((cache / cache_files[0]).read_text())['root'] == str(root)

  checked.clear()
  second = image_folder.build_index(str(root), cache_dir=str(cache))
  assert second['from_cache'] and not checked
  assert second['files'] == first['files']
  np.testing.assert_array_equal(second['labels'], first['labels'])
  assert second['bad'] == first['bad']

  # A new file and a changed file: only those two are checked again.
  (root / 'dog' / 'new.png').write_bytes(encode(Image.new('RGB', (5, 5)),
                                                'PNG'))
  changed = root / 'cat' / 'a.jpg'
  changed.write_bytes(encode(Image.new('RGB', (9, 9)), 'JPEG'))
  os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))
  third = image_folder.build_index(str(root), cache_dir=str(cache))
  assert not third['from_cache']
  assert sorted(checked) == ['cat/a.jpg', 'dog/new.png']
  assert 'dog/new.png' in third['files']

  # A stricter validation level than the cached one re-checks the files.
  checked.clear()
  fourth = image_folder.build_index(str(root), cache_dir=str(cache),
                                    validate='full')
  assert not fourth['from_cache'] and 'emu/truncated.jpg' in checked
  assert 'emu/truncated.jpg' not in fourth['files']


def test_thousands_of_files_start_fast(tmp_path):
  png = encode(Image.new('RGB', (8, 8), (1, 2, 3)), 'PNG')
  for c in range(4):
    folder = tmp_path / 'data' / f'class{c}'
    folder.mkdir(parents=True)
    for i in range(500):
      (folder / f'{i:04d}.png').write_bytes(png)
  start = time.perf_counter()
  cold = image_folder.ImageFolderSource(str(tmp_path / 'data'),
                                        cache_dir=str(tmp_path / 'w'))
  cold_s = time.perf_counter() - start
  start = time.perf_counter()
  warm = image_folder.ImageFolderSource(str(tmp_path / 'data'),
                                        cache_dir=str(tmp_path / 'w'))
  warm_s = time.perf_counter() - start
  assert len(cold) == len(warm) == 2000 and warm.from_cache
  print(cold_s, warm_s)
  assert cold_s < 10 and warm_s < 2, (cold_s, warm_s)
