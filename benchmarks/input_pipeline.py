r"""Throughput of the input pipeline on this machine (images per second).

  python benchmarks/input_pipeline.py \
      [--output=benchmarks/results/input_pipeline.json]

Cases:
  * Fashion-MNIST, the demo default: batch 128, 32x32x3, training
    augmentation (random resized crop (0.8, 1), flip); needs the idx files
    (apt-get install dataset-fashion-mnist, or --fashion_mnist_path).
  * A folder of --num_jpegs random 256x256 JPEGs (made in a temporary folder)
    at 256x256 output, batch 128: training (random resized crop + flip) and
    evaluation (center crop); with several read_threads / worker_count.
  * Indexing that folder: first start (list + header check) and a restart
    with the cached index.

Prints a markdown table and writes the figures as JSON.
"""
import argparse
import json
import os
import platform
import shutil
import tempfile
import time

import numpy as np
from PIL import Image

from maskgit_jax import data
from maskgit_jax.data import config as data_config
from maskgit_jax.data import fashion_mnist
from maskgit_jax.data import image_folder


def make_jpegs(folder: str, count: int, size: int, classes: int = 4) -> None:
  """Writes `count` random smooth size x size JPEGs in `classes` folders."""
  rng = np.random.default_rng(0)
  for i in range(count):
    low = rng.integers(0, 256, (8, 8, 3), np.uint8)
    img = Image.fromarray(low).resize((size, size), Image.Resampling.BICUBIC)
    noisy = np.asarray(img, np.int16) + rng.integers(-12, 13, (size, size, 3))
    img = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    class_dir = os.path.join(folder, f'class_{i % classes}')
    os.makedirs(class_dir, exist_ok=True)
    img.save(os.path.join(class_dir, f'{i:05d}.jpg'), quality=90)


def measure(config: dict, split: str, batch_size: int, batches: int,
            cache_dir: str | None = None) -> dict:
  """Images/s over `batches` batches after one warm-up batch."""
  start = time.perf_counter()
  ds = data.create_dataset(config, split, batch_size, cache_dir=cache_dir,
                           process_index=0, process_count=1)
  with ds.iterator() as it:
    next(it)
    first_batch_s = time.perf_counter() - start
    if ds.num_batches is not None:
      batches = min(batches, ds.num_batches - 1)
    start = time.perf_counter()
    for _ in range(batches):
      batch = next(it)
    elapsed = time.perf_counter() - start
  return {'images_per_s': batches * batch_size / elapsed,
          'batches': batches, 'seconds': elapsed,
          'first_batch_s': first_batch_s,
          'batch_shape': list(batch['image'].shape)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--output',
                      default='benchmarks/results/input_pipeline.json')
  parser.add_argument('--batches', type=int, default=30,
                      help='timed batches per case (after one warm-up)')
  parser.add_argument('--num_jpegs', type=int, default=512)
  parser.add_argument('--jpeg_size', type=int, default=256)
  parser.add_argument('--fashion_mnist_path', default=None)
  args = parser.parse_args()

  rows = []
  load_start = [round(x, 2) for x in os.getloadavg()]

  def add(name, config, result):
    resolved = data_config.resolve(config)
    settings = {'read_threads': data_config.read_threads(resolved),
                'worker_count': resolved.worker_count,
                'defaults': config.get('read_threads') is None and
                            not config.get('worker_count')}
    rows.append(dict(case=name, **settings, **result))
    print(f'{name:40s} {settings} {result["images_per_s"]:10.0f} images/s',
          flush=True)

  try:
    fashion_mnist.find_files('train', args.fashion_mnist_path)
    have_fmnist = True
  except FileNotFoundError as e:
    print(f'Skipping Fashion-MNIST: {e}')
    have_fmnist = False
  if have_fmnist:
    for threads in (None, 2):
      config = {'path': args.fashion_mnist_path, 'read_threads': threads}
      add('fashion_mnist train 32x32x3', config,
          measure(config, 'train', 128, args.batches * 4))
    config = {'path': args.fashion_mnist_path}
    add('fashion_mnist eval 32x32x3', config,
        measure(config, 'eval', 128, args.batches * 4))

  tmp = tempfile.mkdtemp(prefix='maskgit_jpegs_')
  try:
    folder = os.path.join(tmp, 'images')
    start = time.perf_counter()
    make_jpegs(folder, args.num_jpegs, args.jpeg_size)
    print(f'Wrote {args.num_jpegs} JPEGs in {time.perf_counter() - start:.1f}'
          ' s')
    cache = os.path.join(tmp, 'workdir')
    for name in ('cold', 'cached'):
      start = time.perf_counter()
      source = image_folder.ImageFolderSource(folder, cache_dir=cache)
      seconds = time.perf_counter() - start
      rows.append({'case': f'folder index ({name})', 'files': len(source),
                   'seconds': seconds,
                   'images_per_s': len(source) / seconds})
      print(f'folder index ({name}): {len(source)} files in {seconds:.3f} s')
    base = {'source': 'folder', 'path': folder, 'image_size': args.jpeg_size}
    for threads, workers in ((0, 0), (2, 0), (None, 0), (1, 2)):
      config = dict(base, read_threads=threads, worker_count=workers)
      add(f'folder train {args.jpeg_size}x{args.jpeg_size} JPEG', config,
          measure(config, 'train', 128, args.batches, cache))
    add(f'folder eval {args.jpeg_size}x{args.jpeg_size} JPEG', base,
        measure(base, 'eval', 128, args.batches, cache))
  finally:
    shutil.rmtree(tmp, ignore_errors=True)

  load = [round(x, 2) for x in os.getloadavg()]
  print()
  print(f'Machine: {os.cpu_count()} CPUs, Python '
        f'{platform.python_version()}; load average at start {load_start}, '
        f'at end {load} (other work on the machine skews the figures)')
  print()
  print('| case | read_threads | worker_count | images/s |')
  print('|---|---|---|---|')
  for row in rows:
    if 'read_threads' in row:
      default = ' (default)' if row['defaults'] else ''
      print(f'| {row["case"]} | {row["read_threads"]}{default} | '
            f'{row["worker_count"]} | {row["images_per_s"]:.0f} |')
    else:
      print(f'| {row["case"]}: {row["files"]} files in '
            f'{row["seconds"]:.3f} s | | | {row["images_per_s"]:.0f} |')
  os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
  with open(args.output, 'w') as f:
    json.dump({'cpu_count': os.cpu_count(), 'load_average_start': load_start,
               'load_average_end': load, 'rows': rows}, f, indent=1)
  print(f'\nWrote {args.output}')


if __name__ == '__main__':
  main()
