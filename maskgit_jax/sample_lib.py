"""Class-conditional sample grids from a config and checkpoints.

The library behind `python -m maskgit_jax.sample`; tests and the notebook call
it too.
"""

import os
import tempfile
from typing import Optional, Sequence

import jax
import ml_collections
import numpy as np
import tqdm

from maskgit_jax import models
from maskgit_jax import official
from maskgit_jax import visualize
from maskgit_jax.libml import sampling


def build_sampler(config: ml_collections.ConfigDict, *,
                  tokenizer_checkpoint: Optional[str] = None,
                  transformer_checkpoint: Optional[str] = None,
                  random_init: bool = False) -> sampling.MaskGitSampler:
  """A sampler for `config`'s models with weights from files or random.

  Args:
    config: a config with `tokenizer`, `transformer`, `image_size`,
      `num_classes` (see configs/).
    tokenizer_checkpoint, transformer_checkpoint: files in the released format
      (Flax msgpack of `{"params": ...}`), e.g. the released ImageNet files.
    random_init: use randomly initialised weights (seed `config.seed`); for
      smoke tests and timing, the images are noise.
  """
  tokenizer = models.tokenizer_from_config(config)
  transformer = models.transformer_from_config(config)
  have_files = bool(tokenizer_checkpoint or transformer_checkpoint)
  if random_init == have_files:
    raise ValueError("Give both --tokenizer_checkpoint and "
                     "--transformer_checkpoint, or --random_init (not both).")
  if random_init:
    rng_tok, rng_tr = jax.random.split(jax.random.PRNGKey(config.seed))
    tok_vars = models.init_tokenizer(tokenizer, rng_tok, config.image_size)
    tr_vars = models.init_transformer(transformer, rng_tr)
  else:
    if not (tokenizer_checkpoint and transformer_checkpoint):
      raise ValueError("Both --tokenizer_checkpoint and "
                       "--transformer_checkpoint are needed.")
    images = np.zeros((1, config.image_size, config.image_size,
                       tokenizer.channels), np.float32)
    tok_vars = official.load_variables(
        tokenizer_checkpoint, tokenizer, images,
        method=lambda m, x: m.decode_from_indices(m.encode_to_indices(x)))
    ids = np.zeros((1, transformer.max_position_embeddings), np.int32)
    tr_vars = official.load_variables(transformer_checkpoint, transformer, ids)
  return sampling.MaskGitSampler(tokenizer, tok_vars, transformer, tr_vars,
                                 num_classes=config.num_classes)


def sample_classes(sampler: sampling.MaskGitSampler, classes: Sequence[int],
                   samples_per_class: int, rng: jax.Array, *,
                   batch_size: int = 64, progress: bool = True,
                   **decode_options):
  """Samples `samples_per_class` images of each class.

  Runs in batches of `batch_size` (the last one padded, so one shape compiles
  once). Returns `(images [len(classes), samples_per_class, H, W, C],
  tokens [len(classes), samples_per_class, h, w])`.
  """
  labels = [c for c in classes for _ in range(samples_per_class)]
  for label in set(labels):
    sampler.class_tokens([label], 1)  # validates the range before any work
  batch_size = max(1, min(batch_size, len(labels)))
  tokens = []
  starts = range(0, len(labels), batch_size)
  for i, start in enumerate(tqdm.tqdm(starts, desc="sampling", unit="batch",
                                      disable=not progress)):
    chunk = labels[start:start + batch_size]
    padded = chunk + [chunk[-1]] * (batch_size - len(chunk))
    out = sampler.generate_tokens(padded, jax.random.fold_in(rng, i),
                                  **decode_options)
    tokens.append(np.asarray(out)[:len(chunk)])
  tokens = np.concatenate(tokens)
  images = np.concatenate([
      sampler.detokenize(tokens[s:s + batch_size])
      for s in range(0, len(tokens), batch_size)])
  shape = (len(classes), samples_per_class)
  return images.reshape(shape + images.shape[1:]), tokens.reshape(
      shape + tokens.shape[1:])


def decode_options(config: ml_collections.ConfigDict, **overrides):
  """The `decode` keyword arguments from `config.sampling`, with overrides."""
  s = config.sampling
  options = dict(num_iter=s.num_iter, choice_temperature=s.choice_temperature,
                 mask_scheduling_method=s.mask_scheduling_method,
                 guidance_scale=s.guidance_scale,
                 guidance_schedule=s.guidance_schedule,
                 sampling_temperature=s.sampling_temperature, top_k=s.top_k)
  options.update({k: v for k, v in overrides.items() if v is not None})
  return options


def atomic_write(path: str, write_fn) -> str:
  """Writes via a temporary file in the same folder, then renames it.

  A failure leaves any existing file at `path` untouched.
  """
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  suffix = os.path.splitext(path)[1]
  fd, tmp = tempfile.mkstemp(dir=directory, suffix=suffix, prefix=".tmp-")
  os.close(fd)
  try:
    write_fn(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path


def class_label(config, c: int) -> str:
  names = tuple(config.get("class_names", ()) or ())
  return f"{c} {names[c]}" if c < len(names) else str(c)


def write_sample_grid(config: ml_collections.ConfigDict,
                      sampler: sampling.MaskGitSampler, output: str, *,
                      classes: Optional[Sequence[int]] = None,
                      samples_per_class: Optional[int] = None, seed: int = 0,
                      batch_size: int = 64, tokens_output: Optional[str] = None,
                      progress: bool = True, scale: int = 1, **overrides):
  """Samples a grid (one labelled row per class) and writes it as PNG.

  Returns the images `[classes, samples_per_class, H, W, C]`.
  """
  if classes is None:
    classes = list(range(min(config.num_classes, 10)))
  samples_per_class = samples_per_class or config.sampling.samples_per_class
  images, tokens = sample_classes(
      sampler, classes, samples_per_class, jax.random.PRNGKey(seed),
      batch_size=batch_size, progress=progress,
      **decode_options(config, **overrides))
  labels = [class_label(config, c) for c in classes]
  atomic_write(output, lambda p: visualize.save_grid(
      images, p, row_labels=labels, scale=scale))
  if tokens_output:
    atomic_write(tokens_output, lambda p: np.save(open(p, "wb"), tokens))
  return images
