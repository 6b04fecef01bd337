r"""Export a training run's final models in the released checkpoint format.

  python -m maskgit_jax.export --workdir=runs/fashion_mnist \
      --output=checkpoints/fashion_mnist

Writes `tokenizer.msgpack` and `transformer.msgpack` (Flax msgpack of
`{"params": ...}`, the format of the released MaskGIT files, EMA weights when
the run kept them) and `config.json` into OUTPUT (`store.export`). `sample`,
`evaluate` and the notebook read such a folder like a training run.
"""
if __name__ == "__main__":  # before the imports below, which take seconds
  from maskgit_jax.common import allocator
  allocator.maybe_reexec()

from absl import app
from absl import flags

from maskgit_jax import cli
from maskgit_jax.store import export as export_lib

_WORKDIR = flags.DEFINE_string("workdir", None, "Training run folder.")
_OUTPUT = flags.DEFINE_string("output", None, "Folder to write.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not _WORKDIR.value or not _OUTPUT.value:
    raise app.UsageError("--workdir and --output are required.")
  try:
    for name, path in export_lib.export(_WORKDIR.value, _OUTPUT.value).items():
      print(f"{name}: {path}")
  except (ValueError, FileNotFoundError) as e:
    raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
  cli.run(main)
