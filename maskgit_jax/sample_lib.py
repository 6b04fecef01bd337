"""Class-conditional sample grids and decoding strips from checkpoints.

The library behind `python -m maskgit_jax.sample`; tests and the notebook call
it too. Models come from released-format files, from a training run's folder
(`load_workdir`) or from a random initialisation.

    config, sampler = sample_lib.load_workdir("checkpoints/fashion_mnist")
    sample_lib.write_sample_grid(config, sampler, "samples.png")
"""

import contextlib
import json
import math
import os
import uuid
from typing import (Any, Callable, List, NamedTuple, Optional, Sequence,
                    Tuple)

from absl import logging as absl_logging
import jax
import ml_collections
import numpy as np
from PIL import Image
import tqdm

from maskgit_jax import models
from maskgit_jax import official
from maskgit_jax import visualize
from maskgit_jax.libml import parallel_decode
from maskgit_jax.libml import sampling
from maskgit_jax.train_lib import checkpoint as checkpoint_lib


def _roundtrip(module, images):
  return module.decode_from_indices(module.encode_to_indices(images))


def config_from_json(path: str) -> ml_collections.ConfigDict:
  """Reads a run's `config.json` (as training writes it) into a ConfigDict.

  JSON lists become tuples, as the config files write sequences.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Config file not found: {path}")
  try:
    with open(path) as f:
      values = json.load(f)
  except (OSError, ValueError) as e:
    raise ValueError(f"{path}: not a readable JSON config ({e}).") from None
  if not isinstance(values, dict):
    raise ValueError(f"{path}: expected a JSON object, found "
                     f"{type(values).__name__}.")
  return ml_collections.ConfigDict(_lists_to_tuples(values))


def _lists_to_tuples(value):
  if isinstance(value, dict):
    return {k: _lists_to_tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_lists_to_tuples(v) for v in value)
  return value


def workdir_config(workdir: str) -> ml_collections.ConfigDict:
  """The resolved config that training wrote to `workdir/config.json`."""
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f"Training run folder not found: {workdir}")
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} not found: is {workdir} a training run? "
                            "(or pass --config=FILE)")
  return config_from_json(path)


@contextlib.contextmanager
def _absl_log_level(level: int):
  """Temporarily logs only `level` and above, unless -v asked for INFO."""
  previous = absl_logging.get_verbosity()
  if previous < absl_logging.INFO:
    absl_logging.set_verbosity(min(level, previous))
  try:
    yield
  finally:
    absl_logging.set_verbosity(previous)


def _restore_checked(checkpoint_dir: str, module, *example_args,
                     **kwargs) -> Any:
  """`{"params": ...}` of the newest checkpoint (EMA preferred), shape-checked.

  Raises FileNotFoundError when the folder holds no readable checkpoint and
  ValueError when the variables do not fit `module` (another model size).
  """
  with _absl_log_level(absl_logging.ERROR):  # orbax's notes on read-only use
    variables, _ = checkpoint_lib.restore_params_with_info(
        checkpoint_dir, prefer_ema=True)
  if variables is None:
    raise FileNotFoundError(f"No readable checkpoint in {checkpoint_dir}")
  expected = official.model_shapes(module, *example_args, **kwargs)
  official.check_tree(variables, expected, checkpoint_dir)
  return variables


def workdir_variables(config: ml_collections.ConfigDict, workdir: str,
                      tokenizer, transformer):
  """Both models' variables from a training run's newest checkpoints.

  The tokenizer is `config.tokenizer_checkpoint` (released format) when the
  run trained stage 2 on it, else `workdir/tokenizer/checkpoints`; the
  transformer is `workdir/transformer/checkpoints`. EMA weights are preferred.
  A folder written by `python -m maskgit_jax.export` (`tokenizer.msgpack`,
  `transformer.msgpack`, `config.json`) is read directly.
  Returns `(tokenizer_variables, transformer_variables)`.
  """
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f"Training run folder not found: {workdir}")
  images = np.zeros((1, config.image_size, config.image_size,
                     tokenizer.channels), np.float32)
  ids = np.zeros((1, transformer.max_position_embeddings), np.int32)
  exported = [os.path.join(workdir, f"{s}.msgpack")
              for s in ("tokenizer", "transformer")]
  if all(os.path.isfile(p) for p in exported):  # `python -m maskgit_jax.export`
    return (official.load_variables(exported[0], tokenizer, images,
                                    method=_roundtrip),
            official.load_variables(exported[1], transformer, ids))
  released = config.get("tokenizer_checkpoint", "")
  if released:
    tok_vars = official.load_variables(released, tokenizer, images,
                                       method=_roundtrip)
  else:
    tok_vars = _restore_checked(
        os.path.join(workdir, "tokenizer", "checkpoints"), tokenizer, images,
        method=_roundtrip)
  tr_vars = _restore_checked(
      os.path.join(workdir, "transformer", "checkpoints"), transformer, ids)
  return tok_vars, tr_vars


def build_sampler(config: ml_collections.ConfigDict, *,
                  tokenizer_checkpoint: Optional[str] = None,
                  transformer_checkpoint: Optional[str] = None,
                  random_init: bool = False,
                  workdir: Optional[str] = None) -> sampling.MaskGitSampler:
  """A sampler for `config`'s models with weights from files, a run or random.

  Exactly one source of weights:
    tokenizer_checkpoint and transformer_checkpoint: files in the released
      format (Flax msgpack of `{"params": ...}`), e.g. the released ImageNet
      files;
    workdir: a training run's folder (`workdir_variables`);
    random_init: randomly initialised weights (seed `config.seed`); for
      smoke tests and timing, the images are noise.

  Args:
    config: a config with `tokenizer`, `transformer`, `image_size`,
      `num_classes` (see configs/).
    tokenizer_checkpoint, transformer_checkpoint, random_init, workdir: see
      above.

  Raises:
    ValueError: no source or several, or weights of another model size.
    FileNotFoundError: a missing file, folder or checkpoint.
  """
  tokenizer = models.tokenizer_from_config(config)
  transformer = models.transformer_from_config(config)
  have_files = bool(tokenizer_checkpoint or transformer_checkpoint)
  if sum((have_files, bool(random_init), bool(workdir))) != 1:
    raise ValueError("Give exactly one source of weights: --workdir, or both "
                     "--tokenizer_checkpoint and --transformer_checkpoint, or "
                     "--random_init.")
  if random_init:
    rng_tok, rng_tr = jax.random.split(jax.random.PRNGKey(config.seed))
    tok_vars = models.init_tokenizer(tokenizer, rng_tok, config.image_size)
    tr_vars = models.init_transformer(transformer, rng_tr)
  elif workdir:
    tok_vars, tr_vars = workdir_variables(config, workdir, tokenizer,
                                          transformer)
  else:
    if not (tokenizer_checkpoint and transformer_checkpoint):
      raise ValueError("Both --tokenizer_checkpoint and "
                       "--transformer_checkpoint are needed.")
    images = np.zeros((1, config.image_size, config.image_size,
                       tokenizer.channels), np.float32)
    tok_vars = official.load_variables(tokenizer_checkpoint, tokenizer, images,
                                       method=_roundtrip)
    ids = np.zeros((1, transformer.max_position_embeddings), np.int32)
    tr_vars = official.load_variables(transformer_checkpoint, transformer, ids)
  return sampling.MaskGitSampler(tokenizer, tok_vars, transformer, tr_vars,
                                 num_classes=config.num_classes)


class LoadedRun(NamedTuple):
  """A training run's resolved config and a sampler with its weights."""
  config: ml_collections.ConfigDict
  sampler: sampling.MaskGitSampler


def load_workdir(workdir: str,
                 config: Optional[ml_collections.ConfigDict] = None
                 ) -> LoadedRun:
  """Loads a training run (or the shipped checkpoint, laid out the same way).

  Args:
    workdir: a folder with `config.json`, `tokenizer/checkpoints/<step>/` and
      `transformer/checkpoints/<step>/` (what `maskgit_jax.train` writes).
    config: overrides `workdir/config.json` when given.

  Returns:
    `LoadedRun(config, sampler)`; the newest checkpoints, EMA preferred.
  """
  if config is None:
    config = workdir_config(workdir)
  return LoadedRun(config, build_sampler(config, workdir=workdir))


def check_class_ids(classes: Sequence[int], num_classes: int) -> None:
  """Raises ValueError naming the first class id outside [0, num_classes)."""
  for c in classes:
    if not 0 <= int(c) < num_classes:
      raise ValueError(f"Class id {c} is out of range [0, {num_classes}).")


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
  """The `decode` keyword arguments from `config.sampling`, with overrides.

  `position_scheduler` and `halton_random_shift` default to "confidence" and
  False for configs written before they existed (a run's config.json).
  """
  s = config.sampling
  options = dict(num_iter=s.num_iter, choice_temperature=s.choice_temperature,
                 mask_scheduling_method=s.mask_scheduling_method,
                 guidance_scale=s.guidance_scale,
                 guidance_schedule=s.guidance_schedule,
                 sampling_temperature=s.sampling_temperature, top_k=s.top_k,
                 position_scheduler=s.get("position_scheduler", "confidence"),
                 halton_random_shift=s.get("halton_random_shift", False))
  options.update({k: v for k, v in overrides.items() if v is not None})
  check_decode_options(options)
  return options


def check_decode_options(options) -> None:
  """Rejects nonsense decoding values with one line naming the key."""
  def number(key, ok, expected, integer=False):
    value = options.get(key)
    kinds = (int,) if integer else (int, float)
    if (isinstance(value, bool) or not isinstance(value, kinds) or
        not math.isfinite(value) or not ok(value)):
      raise ValueError(f"sampling.{key}={value!r} must be {expected}.")
  number("num_iter", lambda v: v >= 1, "an int >= 1", integer=True)
  number("choice_temperature", lambda v: v >= 0, "a finite number >= 0")
  number("guidance_scale", lambda v: v >= 0, "a finite number >= 0")
  number("sampling_temperature", lambda v: v > 0, "a finite number > 0")
  number("top_k", lambda v: v >= 0, "an int >= 0 (0 = off)", integer=True)
  scheduler = options.get("position_scheduler", "confidence")
  choices = parallel_decode.POSITION_SCHEDULERS
  if scheduler not in choices:
    raise ValueError(f"sampling.position_scheduler={scheduler!r} must be one "
                     f"of {', '.join(repr(c) for c in choices)}.")
  shift = options.get("halton_random_shift", False)
  if not isinstance(shift, (bool, np.bool_)):
    raise ValueError(f"sampling.halton_random_shift={shift!r} must be True or "
                     "False.")
  if shift and scheduler != "halton":
    raise ValueError("sampling.halton_random_shift=True needs "
                     "sampling.position_scheduler='halton'.")


def atomic_write(path: str, write_fn) -> str:
  """Writes via a temporary file in the same folder, then renames it.

  A failure leaves any existing file at `path` untouched.
  """
  return atomic_writes([(path, write_fn)])[0]


def atomic_writes(writes: Sequence[Tuple[str, Callable[[str], Any]]]
                  ) -> List[str]:
  """Several `(path, write_fn)` as one: all files are renamed into place
  only after every one was written, so a failure writes none of them.

  Returns the paths.
  """
  temporaries = []
  try:
    for path, write_fn in writes:
      directory = os.path.dirname(os.path.abspath(path))
      os.makedirs(directory, exist_ok=True)
      tmp = _create_temporary(directory, os.path.splitext(path)[1])
      temporaries.append(tmp)
      write_fn(tmp)
    for (path, _), tmp in zip(writes, temporaries):
      os.replace(tmp, path)
  finally:
    for tmp in temporaries:
      if os.path.exists(tmp):
        os.remove(tmp)
  return [path for path, _ in writes]


def check_image_path(path: str, formats: Sequence[str] = ()) -> None:
  """Raises ValueError unless PIL can write `path` (by its extension).

  Args:
    path: an output file name.
    formats: if given, the PIL formats allowed, e.g. ("GIF",).
  """
  ext = os.path.splitext(path)[1].lower()
  fmt = Image.registered_extensions().get(ext)
  writable = fmt in Image.SAVE and (not formats or fmt in formats)
  if not writable:
    wanted = ("/".join(f".{f.lower()}" for f in formats) if formats else
              "that of an image format PIL writes, e.g. .png")
    raise ValueError(f"Cannot write {path}: its extension is not {wanted}.")


def _create_temporary(directory: str, suffix: str) -> str:
  """A new empty file `directory/.tmp-<random><suffix>`.

  Unlike `tempfile.mkstemp` (mode 0600) its mode follows the umask, like any
  file the user writes.
  """
  while True:
    path = os.path.join(directory, f".tmp-{uuid.uuid4().hex}{suffix}")
    try:
      os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
      return path
    except FileExistsError:
      continue


def class_label(config, c: int) -> str:
  """'3 Dress' when the config names its classes, else '3'."""
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
  writes = [(output, lambda p: visualize.save_grid(
      images, p, row_labels=labels, scale=scale))]
  if tokens_output:
    writes.append((tokens_output, lambda p: _save_npy(p, tokens)))
  atomic_writes(writes)
  return images


def _save_npy(path: str, array: np.ndarray) -> None:
  with open(path, "wb") as f:  # np.save(path) would append ".npy".
    np.save(f, array)


def decoding_histories(sampler: sampling.MaskGitSampler,
                       classes: Sequence[int], samples_per_class: int,
                       rng: jax.Array, *, batch_size: int = 64,
                       **decode_options) -> np.ndarray:
  """The canvas after each iteration for `samples_per_class` samples a class.

  Batches like `sample_classes` (same rng per batch, so the last frames equal
  its images). Returns `[len(classes) * samples_per_class, T, H, W, C]`,
  masked tokens mid grey (`MaskGitSampler.decoding_history`).
  """
  check_class_ids(classes, sampler.num_classes)
  labels = [c for c in classes for _ in range(samples_per_class)]
  batch_size = max(1, min(batch_size, len(labels)))
  frames = []
  for i, start in enumerate(range(0, len(labels), batch_size)):
    chunk = labels[start:start + batch_size]
    padded = chunk + [chunk[-1]] * (batch_size - len(chunk))
    history = sampler.decoding_history(padded, jax.random.fold_in(rng, i),
                                       **decode_options)
    frames.append(history[:len(chunk)])
  return np.concatenate(frames)


def write_decoding_strip(config: ml_collections.ConfigDict,
                         sampler: sampling.MaskGitSampler, output: str,
                         gif_output: Optional[str] = None, *,
                         classes: Optional[Sequence[int]] = None,
                         samples_per_class: int = 1, seed: int = 0,
                         batch_size: int = 64, scale: int = 1,
                         gif_duration_ms: int = 300, **overrides) -> np.ndarray:
  """Writes the decoding as a strip PNG and, optionally, an animated GIF.

  The strip has one labelled row per sample and one column per iteration
  (masked tokens grey), as in the paper's figure. Each GIF frame is the grid
  of all samples (a row per class) at one iteration; the final frame is held
  three times as long. Nothing is written unless everything was computed.

  Returns the frames `[rows, T, H, W, C]`.
  """
  if classes is None:
    classes = list(range(min(config.num_classes, 10)))
  history = decoding_histories(
      sampler, classes, samples_per_class, jax.random.PRNGKey(seed),
      batch_size=batch_size, **decode_options(config, **overrides))
  labels = [class_label(config, c) for c in classes
            for _ in range(samples_per_class)]
  if gif_output:
    per_class = history.reshape((len(classes), samples_per_class) +
                                history.shape[1:])
    frames = np.stack([visualize.grid(per_class[:, :, t])
                       for t in range(history.shape[1])])
    frames = np.concatenate([frames, np.repeat(frames[-1:], 2, axis=0)])
  writes = [(output, lambda p: visualize.save_grid(
      history, p, row_labels=labels, scale=scale))]
  if gif_output:
    writes.append((gif_output, lambda p: visualize.save_gif(
        frames, p, duration_ms=gif_duration_ms, scale=scale)))
  atomic_writes(writes)
  return history
