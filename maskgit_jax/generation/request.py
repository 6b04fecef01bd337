"""One call for everything `python -m maskgit_jax.sample` does.

`run(Request(...))` checks every option, loads the models, samples or edits,
then writes: the CLI turns its flags into a `Request` (each field is the flag
of the same name, None when not given), and tests and notebooks call `run`
the same way:

  from maskgit_jax.generation import request
  request.run(request.Request(workdir="runs/fashion_mnist", classes=[0, 3],
                              samples_per_class=8, output="grid.png"))

Errors are ValueError or OSError whose message names the option (as the
CLI's `--flag`), raised before anything is written. See the CLI's docstring
(`maskgit_jax/sample.py`) for the modes.
"""
import dataclasses
import json
import os
from typing import Any, Dict, List, Optional, Sequence

import jax
import ml_collections

from maskgit_jax.common import checks
from maskgit_jax.common import files
from maskgit_jax.generation import edit_lib
from maskgit_jax.generation import sample_lib
from maskgit_jax.generation import scale_lib
from maskgit_jax.libml import editing
from maskgit_jax.nets import factory
from maskgit_jax.store import loader

MODES = ("generate", "strip", "inpaint", "outpaint", "edit")
EDIT_MODES = ("inpaint", "outpaint", "edit")
DEFAULT_OUTPUT = {"generate": "samples.png", "strip": "decoding.png",
                  "inpaint": "inpaint.png", "outpaint": "outpaint.png",
                  "edit": "edit.png"}
EDIT_NUM_ITER = 12  # The release demo's editing: 12 iterations from the 3rd.
EDIT_START_ITER = 2
SIDES = ("left", "right", "up", "down")

# Defaults of the options that are None when not given.
DEFAULTS = dict(batch_size=64, shard_size=1000, keep_shards=False,
                num_variations=4, scale=1, seed=0, extend_left=0,
                extend_right=0, extend_up=0, extend_down=0)

# The mode-specific options and the modes that use them.
MODE_OPTIONS = {
    "classes": ("generate", "strip"),
    "samples_per_class": ("generate", "strip"),
    "batch_size": ("generate", "strip"),
    "tokens_output": ("generate",),
    "num_samples": ("generate",),
    "shard_size": ("generate",),
    "keep_shards": ("generate",),
    "gif_output": ("strip",),
    "input": EDIT_MODES,
    "box": ("inpaint", "edit"),
    "mask": ("inpaint",),
    "class_id": EDIT_MODES,
    "extend_left": ("outpaint",), "extend_right": ("outpaint",),
    "extend_up": ("outpaint",), "extend_down": ("outpaint",),
    "num_variations": EDIT_MODES,
    "blur_radius": EDIT_MODES,
}


@dataclasses.dataclass(frozen=True)
class Request:
  """What to sample or edit, from which models, and where to write it.

  Models: `workdir` (a training run or the shipped checkpoint; `steps` maps
  "tokenizer"/"transformer" to a checkpoint step), or the released-format
  `tokenizer_checkpoint` and `transformer_checkpoint` files, or
  `random_init`; `config` is required unless `workdir` has a config.json.
  `decode` overrides `config.sampling` (keys of that section). Options left
  None take `DEFAULTS` or the config's values.
  """
  mode: str = "generate"
  config: Optional[ml_collections.ConfigDict] = None
  workdir: Optional[str] = None
  tokenizer_checkpoint: Optional[str] = None
  transformer_checkpoint: Optional[str] = None
  random_init: bool = False
  steps: Optional[Dict[str, int]] = None
  output: Optional[str] = None
  scale: Optional[int] = None
  seed: Optional[int] = None
  decode: Dict[str, Any] = dataclasses.field(default_factory=dict)
  # generate, strip
  classes: Optional[Sequence[int]] = None
  samples_per_class: Optional[int] = None
  batch_size: Optional[int] = None
  tokens_output: Optional[str] = None
  num_samples: Optional[int] = None
  shard_size: Optional[int] = None
  keep_shards: Optional[bool] = None
  gif_output: Optional[str] = None
  # inpaint, outpaint, edit
  input: Optional[str] = None
  box: Optional[str] = None
  mask: Optional[str] = None
  class_id: Optional[int] = None
  extend_left: Optional[int] = None
  extend_right: Optional[int] = None
  extend_up: Optional[int] = None
  extend_down: Optional[int] = None
  num_variations: Optional[int] = None
  blur_radius: Optional[int] = None

  def value(self, name: str) -> Any:
    """The option, or its default when not given."""
    value = getattr(self, name)
    return DEFAULTS.get(name) if value is None else value

  def extents(self) -> Dict[str, int]:
    return {side: self.value(f"extend_{side}") for side in SIDES}

  @property
  def num_iter(self) -> Optional[int]:
    return self.decode.get("num_iter")


def check(r: Request) -> None:
  """Raises ValueError for an option the mode does not use or a missing or
  out-of-range one (before any file is read)."""
  if r.mode not in MODES:
    raise ValueError(f"mode {r.mode!r} must be one of {', '.join(MODES)}.")
  for name, modes in MODE_OPTIONS.items():
    if getattr(r, name) is not None and r.mode not in modes:
      raise ValueError(f"--{name} does not apply to --mode={r.mode} (only "
                       f"to {', '.join(modes)}).")
  if r.mode in EDIT_MODES and not r.input:
    raise ValueError(f"--mode={r.mode} needs --input=IMAGE.")
  if r.mode == "inpaint" and bool(r.box) == bool(r.mask):
    raise ValueError("--mode=inpaint needs either --box or --mask.")
  if r.mode == "edit" and (not r.box or r.class_id is None):
    raise ValueError("--mode=edit needs --box and --class_id.")
  if r.mode == "edit" and (r.num_iter or EDIT_NUM_ITER) <= EDIT_START_ITER:
    raise ValueError(f"--mode=edit starts at iteration {EDIT_START_ITER}: "
                     f"--num_iter must be > {EDIT_START_ITER}.")
  if r.mode == "outpaint" and not any(r.extents().values()):
    raise ValueError("--mode=outpaint needs a positive --extend_left, "
                     "--extend_right, --extend_up or --extend_down.")
  if r.num_samples is None:
    for name in ("shard_size", "keep_shards"):
      if getattr(r, name) is not None:
        raise ValueError(f"--{name} applies only with --num_samples.")
  else:
    for name in ("samples_per_class", "tokens_output", "scale"):
      if getattr(r, name) is not None:
        raise ValueError(f"--{name} does not apply with --num_samples.")
  for name in ("num_variations", "scale", "batch_size", "samples_per_class",
               "num_samples", "shard_size"):
    if getattr(r, name) is not None:
      checks.check_int(f"--{name}", getattr(r, name), low=1)
  if r.num_iter is not None:
    checks.check_int("--num_iter", r.num_iter, low=1)
  if r.blur_radius is not None:
    checks.check_int("--blur_radius", r.blur_radius, low=0)
  for side, value in r.extents().items():
    checks.check_int(f"--extend_{side}", value, low=0)
  if r.classes is not None:
    for c in r.classes:
      if not checks.is_int(c):
        raise ValueError(f"--classes must be integers, got {c!r}.")


def config_of(r: Request) -> ml_collections.ConfigDict:
  """`r.config`, else the workdir's config.json."""
  if r.config is not None:
    return r.config
  if r.workdir:
    return loader.run_config(r.workdir)
  raise ValueError("--config=FILE is required unless --workdir is given.")


def build_sampler(config, r: Request):
  return sample_lib.build_sampler(
      config, tokenizer_checkpoint=r.tokenizer_checkpoint,
      transformer_checkpoint=r.transformer_checkpoint,
      random_init=r.random_init, workdir=r.workdir, steps=r.steps)


def prepare_edit(config, r: Request):
  """Reads and checks the edit inputs before any model is loaded.

  Returns `(image, region)`: the input at the model's size and the box or
  pixel mask (None for outpainting).
  """
  if r.class_id is not None:
    sample_lib.check_class_ids([r.class_id], config.num_classes)
  size = config.image_size
  region = None
  if r.box:
    region = editing.Box.parse(r.box)
    region.validate(size, size)
  channels = factory.tokenizer_from_config(config).channels
  image = edit_lib.load_image(r.input, size, channels)
  if r.mask:
    region = edit_lib.load_mask(r.mask, r.input, size)
  return image, region


def run_edit(config, sampler, r: Request, image, region, output: str):
  """Inpaints, outpaints or edits `image` and writes the result row."""
  rng = jax.random.PRNGKey(r.value("seed"))
  options = sample_lib.decode_options(config, **r.decode)
  common = dict(blur_radius=r.blur_radius, **options)
  variations_count = r.value("num_variations")
  if r.mode == "outpaint":
    extents = r.extents()
    variations = edit_lib.outpaint_variations(
        sampler, image, rng, variations_count, label=r.class_id, **extents,
        **common)
    left, _, up, _ = edit_lib.outpaint_extents(sampler, **extents)
    image = edit_lib.place_on_canvas(image, *variations.shape[1:3], up, left)
  else:
    if r.mode == "edit":
      common.update(start_iter=EDIT_START_ITER,
                    num_iter=r.num_iter or EDIT_NUM_ITER)
    else:
      common.update(start_iter=0)
    variations = sampler.inpaint(image, region, r.class_id, rng,
                                 num_samples=variations_count, **common)
  edit_lib.write_edit_grid(output, image, variations, scale=r.value("scale"))


def run_sampling(config, sampler, r: Request, output: str) -> List[str]:
  """Writes the class grid (generate) or the decoding strip and GIF."""
  common = dict(classes=r.classes, seed=r.value("seed"),
                batch_size=r.value("batch_size"), scale=r.value("scale"),
                **r.decode)
  if r.mode == "generate":
    sample_lib.write_sample_grid(
        config, sampler, output, samples_per_class=r.samples_per_class,
        tokens_output=r.tokens_output, **common)
    return [output] + ([r.tokens_output] if r.tokens_output else [])
  gif = r.gif_output or os.path.splitext(output)[0] + ".gif"
  sample_lib.write_decoding_strip(
      config, sampler, output, gif, samples_per_class=r.samples_per_class or 1,
      **common)
  return [output, gif]


def model_settings(config, r: Request) -> Dict[str, Any]:
  """What fixes the model, for the resume check of `num_samples`."""
  path = lambda p: os.path.abspath(p) if p else None  # noqa: E731
  return dict(workdir=path(r.workdir), tokenizer=path(r.tokenizer_checkpoint),
              transformer=path(r.transformer_checkpoint),
              random_init=r.random_init, config=files.config_to_json(config),
              **({"steps": r.steps} if r.steps else {}))


def run_at_scale(config, r: Request) -> List[str]:
  """`num_samples`: every process samples its shards, process 0 joins."""
  options = sample_lib.decode_options(config, **r.decode)
  plan = scale_lib.plan(
      r.output or "samples.npz", r.num_samples, config.num_classes,
      classes=r.classes, seed=r.value("seed"),
      batch_size=r.value("batch_size"), shard_size=r.value("shard_size"),
      settings=dict(decode=options, model=json.dumps(
          model_settings(config, r), sort_keys=True)))
  written = scale_lib.write_samples(
      config, lambda: build_sampler(config, r), plan,
      keep_shards=r.value("keep_shards"), **r.decode)
  return [written] if written else []


def run(r: Request) -> List[str]:
  """Checks every input, loads the models, computes, then writes.

  Returns the paths written (none on processes other than 0 with
  `num_samples`).
  """
  check(r)
  config = config_of(r)
  sample_lib.decode_options(config, **r.decode)  # Checked before loading.
  if r.num_samples is not None:
    return run_at_scale(config, r)
  output = r.output or DEFAULT_OUTPUT[r.mode]
  files.check_image_path(output)
  if r.gif_output:
    files.check_image_path(r.gif_output, formats=("GIF",))
  if r.classes is not None:
    sample_lib.check_class_ids(r.classes, config.num_classes)
  edit_inputs = prepare_edit(config, r) if r.mode in EDIT_MODES else None
  sampler = build_sampler(config, r)
  if edit_inputs is None:
    return run_sampling(config, sampler, r, output)
  run_edit(config, sampler, r, *edit_inputs, output)
  return [output]
