r"""Evaluate a run: reconstruction and generation metrics, as JSON and a table.

  python -m maskgit_jax.evaluate --workdir=runs/fashion_mnist \
      [--config=configs/fashion_mnist.py] [--num_samples=1000] \
      [--num_real=1000] [--batch_size=32] [--seed=0] [--output=PATH] \
      [--sample_labels=reference|balanced] [--tokenizer_step=N] \
      [--transformer_step=N]

Models: the newest checkpoint of each stage in --workdir (or the one of the
step given by --tokenizer_step / --transformer_step; config from
WORKDIR/config.json unless --config is given), or released-format files
(--tokenizer_checkpoint, --transformer_checkpoint; the workdir must exist and
receives the report and the feature cache). Writes WORKDIR/eval_<UTC
time>.json (or --output) and prints a table; see maskgit_jax/evaluation/
for the metrics. Bad input: one `error: ...` line, exit status 1, nothing
written. The samples are decoded with the config's `sampling` unless the
decoding flags of `maskgit_jax.sample` say otherwise (`--num_iter`,
`--choice_temperature`, `--guidance_scale`, `--guidance_schedule`,
`--sampling_temperature`, `--sampling_temperature_end`, `--top_k`,
`--position_scheduler`, `--halton_random_shift`, `--refine_steps`,
`--refine_fraction`, `--refine_choice_temperature`, `--refine_temperature`;
the report's `decode_options` records what was used).
Started on several processes (the --distributed flags of
maskgit_jax/common/multihost.py), process 0 evaluates on its local devices and
writes; the others wait for it.

Any generator's samples (`evaluation/samples_eval.py`):

  python -m maskgit_jax.evaluate --samples=samples.npz \
      --config=configs/fashion_mnist.py [--num_real=1000] [--output=R.json]

`arr_0` uint8 [N, H, W, 3] (with `labels` for class fidelity), or a folder of
images (one sub-folder per class, or flat), against the config's data set:
FID beside its floor, precision/recall and class fidelity. The reference
features are cached (--cache_dir, default next to the report) and reused.
On several processes the feature extraction is split across them.
"""
if __name__ == "__main__":  # before the imports below, which take seconds
  from maskgit_jax.common import allocator
  allocator.maybe_reexec()

from absl import app
from absl import flags
from ml_collections import config_flags

from maskgit_jax import cli
from maskgit_jax.common import multihost
from maskgit_jax.evaluation import evaluate_lib
from maskgit_jax.evaluation import generation
from maskgit_jax.evaluation import samples_eval
from maskgit_jax.generation import decode_flags
from maskgit_jax.store import loader
from maskgit_jax.store import step_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (default: WORKDIR/config.json).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder (must exist).")
_SAMPLES = flags.DEFINE_string(
    "samples", None, "Evaluate these samples instead of a run's models: an "
    ".npz (arr_0, labels) or a folder of images; needs --config or "
    "--workdir (for the data set).")
_TOK = flags.DEFINE_string("tokenizer_checkpoint", None,
                           "Tokenizer weights (released msgpack format).")
_TR = flags.DEFINE_string("transformer_checkpoint", None,
                          "Transformer weights (released msgpack format).")
_STAGES = flags.DEFINE_list(
    "stages", None, "Stages to evaluate (tokenizer,transformer); default: "
    "every stage with weights.")
_NUM_SAMPLES = flags.DEFINE_integer(
    "num_samples", evaluate_lib.DEFAULT_NUM_SAMPLES,
    "Generated images (their classes: --sample_labels).")
_SAMPLE_LABELS = flags.DEFINE_enum(
    "sample_labels", generation.SAMPLE_LABELS[0],
    list(generation.SAMPLE_LABELS),
    "Classes of the generated images: 'reference' in the proportions of the "
    "FID reference's classes (the same class mix as the real images they "
    "are compared with), 'balanced' evenly over the classes.")
_NUM_REAL = flags.DEFINE_integer(
    "num_real", evaluate_lib.DEFAULT_NUM_REAL,
    "Real eval images: the FID reference and the reconstructed images.")
_NUM_TRAIN = flags.DEFINE_integer(
    "num_train", None, "Real train images of the k-NN class-fidelity "
    "classifier (default: --num_real).")
_BATCH = flags.DEFINE_integer("batch_size", evaluate_lib.DEFAULT_BATCH_SIZE,
                              "Images per batch.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_CACHE = flags.DEFINE_string(
    "cache_dir", None, "Real-feature cache (default: WORKDIR/eval_cache).")
_OUTPUT = flags.DEFINE_string(
    "output", None, "Report path (default: WORKDIR/eval_<UTC time>.json).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _SAMPLES.value:
    given = list(decode_flags.given())
    if given:
      raise SystemExit(f"error: --{given[0]} decodes samples; with --samples "
                       "the samples are given.")
    for name in step_flags.given():
      raise SystemExit(f"error: --{name} picks a run's checkpoint; with "
                       "--samples no model is loaded.")
    _samples()
    return
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required.")
  multihost.run_on_process_zero(_work)


def _samples():
  """--samples: every process featurises its share; process 0 reports."""
  try:
    multihost.initialize_from_flags()
  except ValueError as e:
    raise SystemExit(f"error: {e}") from None
  try:
    try:
      config = _CONFIG.value
      if config is None:
        if not _WORKDIR.value:
          raise ValueError("--samples needs --config=FILE (or --workdir) for "
                           "the data set to compare with.")
        config = loader.run_config(_WORKDIR.value)
      report = samples_eval.evaluate_samples(
          config, _SAMPLES.value, num_real=_NUM_REAL.value,
          num_train=_NUM_TRAIN.value, batch_size=_BATCH.value,
          cache_dir=_CACHE.value, output=_OUTPUT.value)
    except (ValueError, FileNotFoundError) as e:
      raise SystemExit(f"error: {e}") from None
    if multihost.is_primary():
      print(evaluate_lib.format_report(report))
  finally:
    multihost.wait_for_all("maskgit_exit")


def _work():
  try:
    config = _CONFIG.value
    if decode_flags.given():
      config = decode_flags.apply(
          config if config is not None else loader.run_config(_WORKDIR.value))
    report = evaluate_lib.evaluate(
        config, _WORKDIR.value,
        tokenizer_checkpoint=_TOK.value, transformer_checkpoint=_TR.value,
        stages=_STAGES.value,
        steps=step_flags.steps(),
        num_samples=_NUM_SAMPLES.value,
        num_real=_NUM_REAL.value, num_train=_NUM_TRAIN.value,
        batch_size=_BATCH.value, seed=_SEED.value,
        sample_labels=_SAMPLE_LABELS.value, cache_dir=_CACHE.value,
        output=_OUTPUT.value)
  except (ValueError, FileNotFoundError) as e:
    raise SystemExit(f"error: {e}") from None
  print(evaluate_lib.format_report(report))


if __name__ == "__main__":
  cli.run(main)
