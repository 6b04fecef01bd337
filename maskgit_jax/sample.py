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

The flags become one `maskgit_jax.generation.request.Request` and one call
of `request.run`, which tests and notebooks make too. Errors are one line
`error: ...` on stderr, exit code 1, and leave existing outputs untouched.
Started on several processes (the --distributed flags of
maskgit_jax/common/multihost.py), process 0 samples on its local devices and
writes; the others wait for it (with --num_samples every process samples).
"""
if __name__ == "__main__":  # before the imports below, which take seconds
  from maskgit_jax.common import allocator
  allocator.maybe_reexec()

from absl import flags
from ml_collections import config_flags

from maskgit_jax import cli
from maskgit_jax.common import multihost
from maskgit_jax.generation import decode_flags
from maskgit_jax.generation import request
from maskgit_jax.store import step_flags

D = request.DEFAULTS
_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.",
                                          lock_config=True)
_MODE = flags.DEFINE_enum("mode", "generate", request.MODES, "What to do.")
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
# Flags of the request's options (None when not given).
_OPTIONS = [
    flags.DEFINE_integer("scale", D["scale"], "Integer upscaling of the "
                         "images."),
    flags.DEFINE_integer("seed", D["seed"], "Sampling seed."),
    # generate, strip
    flags.DEFINE_list("classes", None,
                      "Class ids (default: the first 10 classes)."),
    flags.DEFINE_integer(
        "samples_per_class", None,
        "Samples per class (default: config; 1 for --mode=strip)."),
    flags.DEFINE_integer("batch_size", D["batch_size"],
                         "Images per decoding batch."),
    flags.DEFINE_string("tokens_output", None,
                        "generate: also write the token grids (.npy)."),
    flags.DEFINE_integer(
        "num_samples", None, "generate: N images as .npz or a PNG folder, "
        "over all devices and processes (instead of a grid)."),
    flags.DEFINE_integer("shard_size", D["shard_size"], "--num_samples: "
                         "images per resumable shard file."),
    flags.DEFINE_bool("keep_shards", D["keep_shards"], "--num_samples: keep "
                      "OUTPUT.shards/ after joining."),
    flags.DEFINE_string("gif_output", None,
                        "strip: the GIF (default: --output with .gif)."),
    # inpaint, outpaint, edit
    flags.DEFINE_string("input", None, "Image file to edit."),
    flags.DEFINE_string("box", None,
                        "Box TOP_LEFT_HEIGHT_WIDTH in the model's pixels."),
    flags.DEFINE_string("mask", None,
                        "inpaint: mask image (nonzero = fill)."),
    flags.DEFINE_integer(
        "class_id", None, "Class of the generated content (edit: required; "
        "inpaint/outpaint: default the null class)."),
    *[flags.DEFINE_integer(f"extend_{side}", D[f"extend_{side}"],
                           f"outpaint: pixels to add {side}.")
      for side in request.SIDES],
    flags.DEFINE_integer("num_variations", D["num_variations"],
                         "Edit results to draw."),
    flags.DEFINE_integer("blur_radius", None,
                         "Compositing blur in pixels (default: release's)."),
]


def parse_classes(values):
  """--classes as ints (None when not given)."""
  try:
    return [int(c) for c in values] if values else None
  except ValueError:
    raise ValueError(f"--classes must be integers, got "
                     f"{','.join(values)}.") from None


def request_from_flags() -> request.Request:
  """The flags as a request: options not given are None."""
  options = {f.name: f.value for f in _OPTIONS if f.present}
  if "classes" in options:
    options["classes"] = parse_classes(options["classes"])
  return request.Request(
      mode=_MODE.value, config=_CONFIG.value, workdir=_WORKDIR.value,
      tokenizer_checkpoint=_TOK.value, transformer_checkpoint=_TR.value,
      random_init=_RANDOM.value, steps=step_flags.steps() or None,
      output=_OUTPUT.value, decode=decode_flags.given(), **options)


def main(argv):
  if len(argv) > 1:
    raise SystemExit(f"error: unexpected arguments: {' '.join(argv[1:])}")
  if flags.FLAGS["num_samples"].value is None:
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
    written = request.run(request_from_flags())
  except (ValueError, OSError) as e:
    raise SystemExit(f"error: {e}") from None
  if written:
    print(f"wrote {', '.join(written)}")


if __name__ == "__main__":
  cli.run(main)
