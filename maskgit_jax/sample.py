r"""Generate class-conditional sample grids.

  python -m maskgit_jax.sample --config=configs/imagenet.py \
      --tokenizer_checkpoint=PATH --transformer_checkpoint=PATH \
      --classes=1,207 --samples_per_class=4 --output=samples.png

`--random_init` samples from randomly initialised models (noise; for smoke
tests and timing). Any `--config.key=value` overrides the config.
"""
from absl import app
from absl import flags
from ml_collections import config_flags

from maskgit_jax import cli
from maskgit_jax import sample_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.",
                                          lock_config=True)
_TOK = flags.DEFINE_string("tokenizer_checkpoint", None,
                           "Tokenizer weights (released msgpack format).")
_TR = flags.DEFINE_string("transformer_checkpoint", None,
                          "Transformer weights (released msgpack format).")
_RANDOM = flags.DEFINE_bool("random_init", False,
                            "Use randomly initialised weights.")
_OUTPUT = flags.DEFINE_string("output", "samples.png", "PNG grid to write.")
_TOKENS = flags.DEFINE_string("tokens_output", None,
                              "Also write the token grids as .npy here.")
_CLASSES = flags.DEFINE_list("classes", None,
                             "Class ids (default: the first 10 classes).")
_PER_CLASS = flags.DEFINE_integer("samples_per_class", None,
                                  "Samples per class (default: config).")
_NUM_ITER = flags.DEFINE_integer("num_iter", None, "Decoding iterations.")
_CHOICE_T = flags.DEFINE_float("choice_temperature", None,
                               "Temperature of the choice of tokens to keep.")
_GUIDANCE = flags.DEFINE_float("guidance_scale", None,
                               "Classifier-free guidance scale.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Images per decoding batch.")
_SCALE = flags.DEFINE_integer("scale", 1, "Integer upscaling of the grid.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config is required, e.g. --config=configs/imagenet.py")
  try:
    classes = [int(c) for c in _CLASSES.value] if _CLASSES.value else None
  except ValueError:
    raise app.UsageError(f"--classes must be integers, got {_CLASSES.value}")
  try:
    sampler = sample_lib.build_sampler(
        config, tokenizer_checkpoint=_TOK.value,
        transformer_checkpoint=_TR.value, random_init=_RANDOM.value)
    sample_lib.write_sample_grid(
        config, sampler, _OUTPUT.value, classes=classes,
        samples_per_class=_PER_CLASS.value, seed=_SEED.value,
        batch_size=_BATCH.value, tokens_output=_TOKENS.value,
        scale=_SCALE.value, num_iter=_NUM_ITER.value,
        choice_temperature=_CHOICE_T.value, guidance_scale=_GUIDANCE.value)
  except (ValueError, FileNotFoundError) as e:
    raise SystemExit(f"error: {e}") from None
  print(f"wrote {_OUTPUT.value}")


if __name__ == "__main__":
  cli.run(main)
