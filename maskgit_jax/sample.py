r"""Sample, edit images and draw the decoding with a MaskGIT model.

Models, one of:
  --workdir=DIR           a training run (or the shipped checkpoint): its
                          newest checkpoints, EMA preferred; the config is
                          DIR/config.json unless --config is given;
                          --tokenizer_step=N / --transformer_step=N pick
                          the checkpoint of that step instead.
  --tokenizer_checkpoint=F --transformer_checkpoint=F --config=FILE
                          files in the released format.
  --random_init --config=FILE
                          random weights (noise; smoke tests and timing).

Modes (--mode, default generate):
  generate  a grid, one labelled row per class:
              --classes=0,3 --samples_per_class=8 [--tokens_output=t.npy]
            or, with --num_samples, N images for evaluation suites, split
            over every device of every process (same command on each):
              --num_samples=50000 --output=samples.npz | --output=DIR
              [--classes=...] [--shard_size=1000] [--keep_shards]
            .npz: arr_0 uint8 [N, H, W, 3] (grey as 3 channels) and labels
            [N]; DIR: {index:06d}_{class}.png. Classes are balanced over
            --classes (default all). Shards go to OUTPUT.shards/ and a rerun
            of the same command resumes; images depend on --seed,
            --batch_size (a multiple of the local device count) and
            --shard_size, not on the number of devices or processes.
  strip     the canvas after each iteration (rows = samples, columns =
            iterations, masked tokens grey) as PNG, and an animated GIF
            (--gif_output, default: --output with .gif):
              --classes=0,3 --samples_per_class=1
  inpaint   regenerate a box or the nonzero pixels of a mask image of the
            input's size, the whole schedule from iteration 0 (class:
            --class_id, default the null class):
              --input=IMG --box=TOP_LEFT_HEIGHT_WIDTH | --mask=MASK.png
  outpaint  extend the image (pixels, rounded up to whole tokens):
              --input=IMG --extend_left=8 --extend_right=0 --extend_up=0
              --extend_down=0
  edit      the release demo's class-conditional box editing (start_iter 2,
            12 iterations unless --num_iter):
              --input=IMG --box=TOP_LEFT_HEIGHT_WIDTH --class_id=3

Edit modes load any image file, convert it to the model's channels and
center-crop and resize it to the model's image size; boxes and extents are in
the model's pixels. They write one row: the input, then --num_variations
results (pixels outside the edited tokens are the input's, blended over
--blur_radius pixels; default the release's image_size // 16 - 1).

Decoding: --num_iter --choice_temperature --guidance_scale --guidance_schedule
--sampling_temperature --sampling_temperature_end --top_k
--position_scheduler=confidence|halton --[no]halton_random_shift
--refine_steps --refine_fraction --refine_choice_temperature
--refine_temperature (corrector steps after the last iteration) --seed
(defaults: the config's `sampling`).
Any `--config.key=value` overrides the config file.

  python -m maskgit_jax.sample --workdir=checkpoints/fashion_mnist \
      --mode=edit --input=shirt.png --box=8_8_16_16 --class_id=2 \
      --output=edit.png

Errors are one line `error: ...` on stderr, exit code 1, and leave existing
outputs untouched. Started on several processes (the --distributed flags of
maskgit_jax/common/multihost.py), process 0 samples on its local devices and
writes; the others wait for it (with --num_samples every process samples).
"""
import json
import os
from typing import List

from absl import flags
import jax
from ml_collections import config_flags

from maskgit_jax import cli
from maskgit_jax.common import files
from maskgit_jax.common import multihost
from maskgit_jax.generation import decode_flags
from maskgit_jax.generation import edit_lib
from maskgit_jax.nets import factory
from maskgit_jax.generation import sample_lib
from maskgit_jax.generation import scale_lib
from maskgit_jax.store import loader
from maskgit_jax.store import step_flags
from maskgit_jax.libml import editing

MODES = ("generate", "strip", "inpaint", "outpaint", "edit")
DEFAULT_OUTPUT = {"generate": "samples.png", "strip": "decoding.png",
                  "inpaint": "inpaint.png", "outpaint": "outpaint.png",
                  "edit": "edit.png"}
EDIT_NUM_ITER = 12  # The release demo's editing: 12 iterations from the 3rd.
EDIT_START_ITER = 2

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.",
                                          lock_config=True)
_MODE = flags.DEFINE_enum("mode", "generate", MODES, "What to do.")
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "A training run: newest checkpoints, EMA preferred.")
_TOK = flags.DEFINE_string("tokenizer_checkpoint", None,
                           "Tokenizer weights (released msgpack format).")
_TR = flags.DEFINE_string("transformer_checkpoint", None,
                          "Transformer weights (released msgpack format).")
_RANDOM = flags.DEFINE_bool("random_init", False,
                            "Use randomly initialised weights.")
_OUTPUT = flags.DEFINE_string("output", None,
                              "PNG to write (default: MODE-specific name).")
_SCALE = flags.DEFINE_integer("scale", 1, "Integer upscaling of the images.")
# generate, strip
_CLASSES = flags.DEFINE_list("classes", None,
                             "Class ids (default: the first 10 classes).")
_PER_CLASS = flags.DEFINE_integer(
    "samples_per_class", None,
    "Samples per class (default: config; 1 for --mode=strip).")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Images per decoding batch.")
_TOKENS = flags.DEFINE_string("tokens_output", None,
                              "generate: also write the token grids (.npy).")
_NUM_SAMPLES = flags.DEFINE_integer(
    "num_samples", None, "generate: N images as .npz or a PNG folder, over "
    "all devices and processes (instead of a grid).")
_SHARD_SIZE = flags.DEFINE_integer(
    "shard_size", 1000, "--num_samples: images per resumable shard file.")
_KEEP_SHARDS = flags.DEFINE_bool(
    "keep_shards", False, "--num_samples: keep OUTPUT.shards/ after joining.")
_GIF = flags.DEFINE_string("gif_output", None,
                           "strip: the GIF (default: --output with .gif).")
# inpaint, outpaint, edit
_INPUT = flags.DEFINE_string("input", None, "Image file to edit.")
_BOX = flags.DEFINE_string("box", None,
                           "Box TOP_LEFT_HEIGHT_WIDTH in the model's pixels.")
_MASK = flags.DEFINE_string("mask", None,
                            "inpaint: mask image (nonzero = fill).")
_CLASS_ID = flags.DEFINE_integer(
    "class_id", None, "Class of the generated content (edit: required; "
    "inpaint/outpaint: default the null class).")
_EXTEND = {side: flags.DEFINE_integer(f"extend_{side}", 0,
                                      f"outpaint: pixels to add {side}.")
           for side in ("left", "right", "up", "down")}
_VARIATIONS = flags.DEFINE_integer("num_variations", 4,
                                   "Edit results to draw.")
_BLUR = flags.DEFINE_integer("blur_radius", None,
                             "Compositing blur in pixels (default: release's).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")

# The mode-specific flags and the modes that use them.
MODE_FLAGS = {
    "classes": ("generate", "strip"),
    "samples_per_class": ("generate", "strip"),
    "batch_size": ("generate", "strip"),
    "tokens_output": ("generate",),
    "num_samples": ("generate",),
    "shard_size": ("generate",),
    "keep_shards": ("generate",),
    "gif_output": ("strip",),
    "input": ("inpaint", "outpaint", "edit"),
    "box": ("inpaint", "edit"),
    "mask": ("inpaint",),
    "class_id": ("inpaint", "outpaint", "edit"),
    "extend_left": ("outpaint",), "extend_right": ("outpaint",),
    "extend_up": ("outpaint",), "extend_down": ("outpaint",),
    "num_variations": ("inpaint", "outpaint", "edit"),
    "blur_radius": ("inpaint", "outpaint", "edit"),
}


def check_mode_flags(mode: str) -> None:
  """Raises ValueError for a flag the mode does not use or a missing one."""
  for name, modes in MODE_FLAGS.items():
    if flags.FLAGS[name].present and mode not in modes:
      raise ValueError(f"--{name} does not apply to --mode={mode} (only to "
                       f"{', '.join(modes)}).")
  if mode in ("inpaint", "outpaint", "edit") and not _INPUT.value:
    raise ValueError(f"--mode={mode} needs --input=IMAGE.")
  if mode == "inpaint" and bool(_BOX.value) == bool(_MASK.value):
    raise ValueError("--mode=inpaint needs either --box or --mask.")
  if mode == "edit" and (not _BOX.value or _CLASS_ID.value is None):
    raise ValueError("--mode=edit needs --box and --class_id.")
  num_iter = decode_flags.NUM_ITER.value or EDIT_NUM_ITER
  if mode == "edit" and num_iter <= EDIT_START_ITER:
    raise ValueError(f"--mode=edit starts at iteration {EDIT_START_ITER}: "
                     f"--num_iter must be > {EDIT_START_ITER}.")
  if mode == "outpaint" and not any(f.value for f in _EXTEND.values()):
    raise ValueError("--mode=outpaint needs a positive --extend_left, "
                     "--extend_right, --extend_up or --extend_down.")
  if _NUM_SAMPLES.value is None:
    for flag in (_SHARD_SIZE, _KEEP_SHARDS):
      if flag.present:
        raise ValueError(f"--{flag.name} applies only with --num_samples.")
  else:
    for flag in (_PER_CLASS, _TOKENS, _SCALE):
      if flag.present:
        raise ValueError(f"--{flag.name} does not apply with --num_samples.")
  for flag in (_VARIATIONS, _SCALE, _BATCH, _PER_CLASS, decode_flags.NUM_ITER,
               _NUM_SAMPLES, _SHARD_SIZE):
    if flag.value is not None and flag.value < 1:
      raise ValueError(f"--{flag.name} must be >= 1, got {flag.value}.")
  if _BLUR.value is not None and _BLUR.value < 0:
    raise ValueError(f"--blur_radius must be >= 0, got {_BLUR.value}.")


def load_config():
  """--config (with overrides), else --workdir's config.json."""
  if _CONFIG.value is not None:
    return _CONFIG.value
  if _WORKDIR.value:
    return loader.run_config(_WORKDIR.value)
  raise ValueError("--config=FILE is required unless --workdir is given.")


def parse_classes():
  """--classes as ints (None when not given)."""
  try:
    return [int(c) for c in _CLASSES.value] if _CLASSES.value else None
  except ValueError:
    raise ValueError(f"--classes must be integers, got "
                     f"{','.join(_CLASSES.value)}.") from None


def prepare_edit(config):
  """Reads and checks the edit inputs before any model is loaded.

  Returns `(image, region)`: the input at the model's size and the box or
  pixel mask (None for outpainting).
  """
  if _CLASS_ID.value is not None:
    sample_lib.check_class_ids([_CLASS_ID.value], config.num_classes)
  size = config.image_size
  region = None
  if _BOX.value:
    region = editing.Box.parse(_BOX.value)
    region.validate(size, size)
  channels = factory.tokenizer_from_config(config).channels
  image = edit_lib.load_image(_INPUT.value, size, channels)
  if _MASK.value:
    region = edit_lib.load_mask(_MASK.value, _INPUT.value, size)
  for side, flag in _EXTEND.items():
    if flag.value < 0:
      raise ValueError(f"--extend_{side} must be >= 0, got {flag.value}.")
  return image, region


def run_edit(config, sampler, mode, image, region, output):
  """Inpaints, outpaints or edits `image` and writes the result row."""
  rng = jax.random.PRNGKey(_SEED.value)
  options = sample_lib.decode_options(config, **decode_flags.overrides())
  common = dict(blur_radius=_BLUR.value, **options)
  if mode == "outpaint":
    extents = {side: flag.value for side, flag in _EXTEND.items()}
    variations = edit_lib.outpaint_variations(
        sampler, image, rng, _VARIATIONS.value, label=_CLASS_ID.value,
        **extents, **common)
    left, _, up, _ = edit_lib.outpaint_extents(sampler, **extents)
    image = edit_lib.place_on_canvas(image, *variations.shape[1:3], up, left)
  else:
    if mode == "edit":
      common.update(start_iter=EDIT_START_ITER,
                    num_iter=decode_flags.NUM_ITER.value or EDIT_NUM_ITER)
    else:
      common.update(start_iter=0)
    variations = sampler.inpaint(image, region, _CLASS_ID.value, rng,
                                 num_samples=_VARIATIONS.value, **common)
  edit_lib.write_edit_grid(output, image, variations, scale=_SCALE.value)


def run_sampling(config, sampler, mode, classes, output):
  """Writes the class grid (generate) or the decoding strip and GIF."""
  common = dict(classes=classes, seed=_SEED.value, batch_size=_BATCH.value,
                scale=_SCALE.value, **decode_flags.overrides())
  if mode == "generate":
    sample_lib.write_sample_grid(
        config, sampler, output, samples_per_class=_PER_CLASS.value,
        tokens_output=_TOKENS.value, **common)
    return [output] + ([_TOKENS.value] if _TOKENS.value else [])
  gif = _GIF.value or os.path.splitext(output)[0] + ".gif"
  sample_lib.write_decoding_strip(
      config, sampler, output, gif, samples_per_class=_PER_CLASS.value or 1,
      **common)
  return [output, gif]


def model_settings(config):
  """What fixes the model, for the resume check of --num_samples."""
  path = lambda p: os.path.abspath(p) if p else None  # noqa: E731
  steps = step_flags.steps()
  return dict(workdir=path(_WORKDIR.value), tokenizer=path(_TOK.value),
              transformer=path(_TR.value), random_init=_RANDOM.value,
              config=files.config_to_json(config),
              **({"steps": steps} if steps else {}))


def run_at_scale(config, classes) -> List[str]:
  """--num_samples: every process samples its shards, process 0 joins."""
  options = sample_lib.decode_options(config, **decode_flags.overrides())
  plan = scale_lib.plan(
      _OUTPUT.value or "samples.npz", _NUM_SAMPLES.value, config.num_classes,
      classes=classes, seed=_SEED.value, batch_size=_BATCH.value,
      shard_size=_SHARD_SIZE.value,
      settings=dict(decode=options, model=json.dumps(model_settings(config),
                                                     sort_keys=True)))
  build = lambda: sample_lib.build_sampler(  # noqa: E731
      config, tokenizer_checkpoint=_TOK.value,
      transformer_checkpoint=_TR.value, random_init=_RANDOM.value,
      workdir=_WORKDIR.value, steps=step_flags.steps())
  written = scale_lib.write_samples(config, build, plan,
                                    keep_shards=_KEEP_SHARDS.value,
                                    **decode_flags.overrides())
  return [written] if written else []


def run(mode: str) -> List[str]:
  """Checks every input, loads the models, computes, then writes."""
  check_mode_flags(mode)
  config = load_config()
  # Checked before loading.
  sample_lib.decode_options(config, **decode_flags.overrides())
  if _NUM_SAMPLES.value is not None:
    return run_at_scale(config, parse_classes())
  output = _OUTPUT.value or DEFAULT_OUTPUT[mode]
  files.check_image_path(output)
  if _GIF.value:
    files.check_image_path(_GIF.value, formats=("GIF",))
  classes = parse_classes()
  if classes is not None:
    sample_lib.check_class_ids(classes, config.num_classes)
  edit_inputs = None
  if mode in ("inpaint", "outpaint", "edit"):
    edit_inputs = prepare_edit(config)
  sampler = sample_lib.build_sampler(
      config, tokenizer_checkpoint=_TOK.value,
      transformer_checkpoint=_TR.value, random_init=_RANDOM.value,
      workdir=_WORKDIR.value, steps=step_flags.steps())
  if edit_inputs is None:
    return run_sampling(config, sampler, mode, classes, output)
  run_edit(config, sampler, mode, *edit_inputs, output)
  return [output]


def main(argv):
  if len(argv) > 1:
    raise SystemExit(f"error: unexpected arguments: {' '.join(argv[1:])}")
  if _NUM_SAMPLES.value is None:
    multihost.run_on_process_zero(_work)
    return
  try:  # --num_samples: every process works; an error exits at once.
    multihost.initialize_from_flags()
  except ValueError as e:
    raise SystemExit(f"error: {e}") from None
  _work()
  multihost.wait_for_all("maskgit_exit")


def _work():
  try:
    written = run(_MODE.value)
  except (ValueError, OSError) as e:
    raise SystemExit(f"error: {e}") from None
  if written:
    print(f"wrote {', '.join(written)}")


if __name__ == "__main__":
  cli.run(main)
