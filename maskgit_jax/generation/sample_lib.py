"""Class-conditional sample grids and decoding strips from checkpoints.

The library behind `python -m maskgit_jax.sample`; tests and the notebook call
it too. Models come from released-format files, from a training run's folder
(`load_workdir`) or from a random initialisation.

    config, sampler = sample_lib.load_workdir("checkpoints/fashion_mnist")
    sample_lib.write_sample_grid(config, sampler, "samples.png")
"""

from typing import (Any, Callable, Dict, Iterator, List, NamedTuple,
                    Optional, Sequence)

import jax
import ml_collections
import numpy as np
import tqdm

from maskgit_jax.common import checks
from maskgit_jax.common import files
from maskgit_jax.common import grids
from maskgit_jax.libml import mask_schedule
from maskgit_jax.libml import parallel_decode
from maskgit_jax.libml import sampling
from maskgit_jax.store import loader


def build_sampler(config: ml_collections.ConfigDict, *,
                  tokenizer_checkpoint: Optional[str] = None,
                  transformer_checkpoint: Optional[str] = None,
                  random_init: bool = False,
                  workdir: Optional[str] = None,
                  steps: Optional[Dict[str, int]] = None
                  ) -> sampling.MaskGitSampler:
  """A sampler for `config`'s models with weights from files, a run or random.

  Exactly one source of weights:
    tokenizer_checkpoint and transformer_checkpoint: files in the released
      format (Flax msgpack of `{"params": ...}`), e.g. the released ImageNet
      files;
    workdir: a training run's folder or an exported folder;
    random_init: randomly initialised weights (seed `config.seed`); for
      smoke tests and timing, the images are noise.
  The weights are found and checked by `maskgit_jax.store.loader`; `steps`
  ({stage: step}) picks those checkpoints of the workdir, not the newest.

  Raises:
    ValueError: no source or several, or weights of another model size.
    FileNotFoundError: a missing file, folder or checkpoint.
  """
  have_files = bool(tokenizer_checkpoint or transformer_checkpoint)
  if sum((have_files, bool(random_init), bool(workdir))) != 1:
    raise ValueError("Give exactly one source of weights: --workdir, or both "
                     "--tokenizer_checkpoint and --transformer_checkpoint, or "
                     "--random_init.")
  if have_files and not (tokenizer_checkpoint and transformer_checkpoint):
    raise ValueError("Both --tokenizer_checkpoint and "
                     "--transformer_checkpoint are needed.")
  loaded = loader.load_models(
      config, workdir, tokenizer_checkpoint=tokenizer_checkpoint,
      transformer_checkpoint=transformer_checkpoint, random_init=random_init,
      required=loader.STAGES, steps=steps)
  return sampler_of(config, loaded)


def sampler_of(config: ml_collections.ConfigDict,
               loaded: loader.LoadedModels) -> sampling.MaskGitSampler:
  """The sampler of loaded models (both stages must have variables)."""
  return sampling.MaskGitSampler(
      loaded.tokenizer, loaded.tokenizer_variables, loaded.transformer,
      loaded.transformer_variables, num_classes=config.num_classes)


class LoadedRun(NamedTuple):
  """A training run's resolved config and a sampler with its weights."""
  config: ml_collections.ConfigDict
  sampler: sampling.MaskGitSampler


def load_workdir(workdir: str,
                 config: Optional[ml_collections.ConfigDict] = None
                 ) -> LoadedRun:
  """Loads a training run (or the shipped checkpoint, an exported folder).

  Args:
    workdir: a folder with `config.json` and either the stages' checkpoints
      (what `maskgit_jax.train` writes) or `tokenizer.msgpack` and
      `transformer.msgpack` (what `maskgit_jax.export` writes).
    config: overrides `workdir/config.json` when given.

  Returns:
    `LoadedRun(config, sampler)`; the newest checkpoints, EMA preferred.
  """
  if config is None:
    config = loader.run_config(workdir)
  return LoadedRun(config, build_sampler(config, workdir=workdir))


def check_class_ids(classes: Sequence[int], num_classes: int) -> None:
  """Raises ValueError naming the first class id outside [0, num_classes)."""
  for c in classes:
    if not 0 <= int(c) < num_classes:
      raise ValueError(f"Class id {c} is out of range [0, {num_classes}).")


def balanced_labels(num_samples: int, num_classes: int) -> np.ndarray:
  """`[num_samples]` class ids, spread evenly (the first classes get the
  remainder), grouped by class."""
  per_class = [num_samples // num_classes + (c < num_samples % num_classes)
               for c in range(num_classes)]
  return np.repeat(np.arange(num_classes), per_class)


def proportional_labels(num_samples: int, reference_labels: Sequence[int],
                        num_classes: int) -> np.ndarray:
  """`[num_samples]` class ids in the proportions of `reference_labels`,
  grouped by class.

  Class c gets `num_samples * n_c / n` samples (n_c of the n reference labels
  are c), rounded by largest remainder (ties: the lower class id), so the
  counts sum to `num_samples`; with `num_samples == n` they are the
  reference's own counts. A class absent from the reference gets none.

  Raises:
    ValueError: no reference labels, or one outside [0, num_classes).
  """
  ref = np.asarray(reference_labels, np.int64).reshape(-1)
  if ref.size == 0:
    raise ValueError("proportional labels need reference labels; got none")
  check_class_ids(np.unique(ref), num_classes)
  counts = np.bincount(ref, minlength=num_classes)
  exact = num_samples * counts / ref.size
  per_class = np.floor(exact).astype(np.int64)
  remainder = num_samples - int(per_class.sum())
  # Largest fractional parts first; a stable sort keeps lower ids first.
  order = np.argsort(-(exact - per_class), kind="stable")
  per_class[order[:remainder]] += 1
  return np.repeat(np.arange(num_classes), per_class)


def label_batches(fn: Callable[[List[int], jax.Array], Any],
                  labels: Sequence[int], rng: jax.Array, batch_size: int, *,
                  shrink: bool = True, progress: bool = False,
                  desc: str = "sampling") -> Iterator[np.ndarray]:
  """The one padded-batch loop of sampling: `fn(padded_labels, key)` per batch.

  Batch i holds `labels[i*b:(i+1)*b]`, padded to `b` with its last label (one
  compiled shape), and gets the key `fold_in(rng, i)`. Yields each batch's
  output as numpy, cut to the batch's real labels.

  Args:
    fn: `(labels of length b, key) -> [b, ...]`.
    labels: class ids.
    rng: the base key.
    batch_size: b.
    shrink: use b = min(batch_size, len(labels)) (grids); False keeps b (the
      evaluation's one shape for every sample count).
    progress: a tqdm bar of batches.
    desc: the bar's label.
  """
  labels = [int(c) for c in labels]
  if shrink:
    batch_size = min(batch_size, len(labels))
  batch_size = max(1, batch_size)
  starts = range(0, len(labels), batch_size)
  for i, start in enumerate(tqdm.tqdm(starts, desc=desc, unit="batch",
                                      disable=not progress)):
    chunk = labels[start:start + batch_size]
    padded = chunk + [chunk[-1]] * (batch_size - len(chunk))
    yield np.asarray(fn(padded, jax.random.fold_in(rng, i)))[:len(chunk)]


def sample_classes(sampler: sampling.MaskGitSampler, classes: Sequence[int],
                   samples_per_class: int, rng: jax.Array, *,
                   batch_size: int = 64, progress: bool = True,
                   **decode_options):
  """Samples `samples_per_class` images of each class.

  Runs in batches of `batch_size` (`label_batches`). Returns `(images
  [len(classes), samples_per_class, H, W, C], tokens [len(classes),
  samples_per_class, h, w])`.
  """
  labels = [c for c in classes for _ in range(samples_per_class)]
  for label in set(labels):
    sampler.class_tokens([label], 1)  # validates the range before any work
  tokens = np.concatenate(list(label_batches(
      lambda batch, key: sampler.generate_tokens(batch, key, **decode_options),
      labels, rng, batch_size, progress=progress)))
  batch_size = max(1, min(batch_size, len(labels)))
  images = np.concatenate([
      sampler.detokenize(tokens[s:s + batch_size])
      for s in range(0, len(tokens), batch_size)])
  shape = (len(classes), samples_per_class)
  return images.reshape(shape + images.shape[1:]), tokens.reshape(
      shape + tokens.shape[1:])


def decode_options(config: ml_collections.ConfigDict, **overrides):
  """The `decode` keyword arguments from `config.sampling`, with overrides.

  `position_scheduler`, `halton_random_shift`, `sampling_temperature_end` and
  the `refine_*` keys default to "confidence", False, None and off (0 steps)
  for configs written before they existed (a run's config.json).
  """
  s = config.sampling
  options = dict(num_iter=s.num_iter, choice_temperature=s.choice_temperature,
                 mask_scheduling_method=s.mask_scheduling_method,
                 guidance_scale=s.guidance_scale,
                 guidance_schedule=s.guidance_schedule,
                 sampling_temperature=s.sampling_temperature,
                 sampling_temperature_end=s.get("sampling_temperature_end"),
                 top_k=s.top_k,
                 position_scheduler=s.get("position_scheduler", "confidence"),
                 halton_random_shift=s.get("halton_random_shift", False),
                 refine_steps=s.get("refine_steps", 0),
                 refine_fraction=s.get("refine_fraction", 0.25),
                 refine_choice_temperature=s.get("refine_choice_temperature",
                                                 0.0),
                 refine_temperature=s.get("refine_temperature"))
  options.update({k: v for k, v in overrides.items() if v is not None})
  check_decode_options(options)
  return options


def check_decode_options(options) -> None:
  """Rejects nonsense decoding values with one line naming the key."""
  def number(key, *bounds, **kwargs):
    checks.check_number(f"sampling.{key}", options.get(key), *bounds,
                        **kwargs)

  def integer(key, low, note=""):
    # At most int32's largest: the decode loop's counts are int32 arrays.
    checks.check_int(f"sampling.{key}", options.get(key), low, 2**31 - 1,
                     note=note)
  integer("num_iter", 1)
  number("choice_temperature", 0)
  number("guidance_scale", 0)
  number("sampling_temperature", 0, open_low=True)
  number("sampling_temperature_end", 0, open_low=True, allow_none=True,
         note="constant")
  integer("top_k", 0, "0 = off")
  integer("refine_steps", 0, "0 = off")
  number("refine_fraction", 0, 1, open_low=True)
  number("refine_choice_temperature", 0)
  number("refine_temperature", 0, open_low=True, allow_none=True,
         note="the last iteration's")
  method = options.get("mask_scheduling_method", "cosine")
  try:
    mask_schedule.validate(method)
  except ValueError as e:
    raise ValueError(f"sampling.mask_scheduling_method={method!r}: {e}"
                     ) from None
  guidance = options.get("guidance_schedule", "constant")
  if guidance not in parallel_decode.GUIDANCE_SCHEDULES:
    checks.refuse("sampling.guidance_schedule", guidance, "one of " + ", ".join(
        map(repr, parallel_decode.GUIDANCE_SCHEDULES)))
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
  writes = [(output, lambda p: grids.save_grid(
      images, p, row_labels=labels, scale=scale))]
  if tokens_output:
    writes.append((tokens_output, lambda p: _save_npy(p, tokens)))
  files.atomic_writes(writes)
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
  return np.concatenate(list(label_batches(
      lambda batch, key: sampler.decoding_history(batch, key,
                                                  **decode_options),
      labels, rng, batch_size)))


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
    frames = np.stack([grids.grid(per_class[:, :, t])
                       for t in range(history.shape[1])])
    frames = np.concatenate([frames, np.repeat(frames[-1:], 2, axis=0)])
  writes = [(output, lambda p: grids.save_grid(
      history, p, row_labels=labels, scale=scale))]
  if gif_output:
    writes.append((gif_output, lambda p: grids.save_gif(
        frames, p, duration_ms=gif_duration_ms, scale=scale)))
  files.atomic_writes(writes)
  return history
