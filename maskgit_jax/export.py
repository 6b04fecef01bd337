r"""Export a training run's final models in the released checkpoint format.

  python -m maskgit_jax.export --workdir=runs/fashion_mnist \
      --output=checkpoints/fashion_mnist

Writes `tokenizer.msgpack` and `transformer.msgpack` (Flax msgpack of
`{"params": ...}`, the format of the released MaskGIT files, EMA weights when
the run kept them) and `config.json` into OUTPUT. `sample`, `evaluate` and
`official.load_variables` read them.
"""
import os
import shutil

from absl import app
from absl import flags
import flax
import jax

from maskgit_jax import cli
from maskgit_jax import sample_lib
from maskgit_jax.train_lib import run

_WORKDIR = flags.DEFINE_string("workdir", None, "Training run folder.")
_OUTPUT = flags.DEFINE_string("output", None, "Folder to write.")


def export(workdir: str, output: str) -> dict:
  """Writes the run's models as released-format files; returns their paths."""
  paths = {}
  for stage in ("tokenizer", "transformer"):
    variables = run.restore_params(os.path.join(workdir, stage, "checkpoints"))
    if variables is None:
      raise ValueError(f"{workdir}: no {stage} checkpoint to export.")
    data = flax.serialization.to_bytes(jax.device_get(variables))
    path = os.path.join(output, f"{stage}.msgpack")
    sample_lib.atomic_write(path, lambda p, d=data: open(p, "wb").write(d))
    paths[stage] = path
  config = os.path.join(workdir, "config.json")
  if not os.path.isfile(config):
    raise ValueError(f"{workdir}: config.json is missing.")
  paths["config"] = os.path.join(output, "config.json")
  sample_lib.atomic_write(paths["config"],
                          lambda p: shutil.copyfile(config, p))
  return paths


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not _WORKDIR.value or not _OUTPUT.value:
    raise app.UsageError("--workdir and --output are required.")
  try:
    for name, path in export(_WORKDIR.value, _OUTPUT.value).items():
      print(f"{name}: {path}")
  except (ValueError, FileNotFoundError) as e:
    raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
  cli.run(main)
