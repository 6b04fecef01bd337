"""A config file with `--set KEY=VALUE` overrides, for the benchmark scripts
(`compile_memory.py`, `stage1_phases.py`). Imports nothing of JAX until
called, so a script may still set XLA flags after importing it."""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(path, sets, batch_size):
  """The config of `path` (relative to the repository root, or absolute)
  with each `KEY=VALUE` of `sets` applied (VALUE a Python literal, else a
  string) and, when `batch_size`, every stage's batch size set; a malformed
  item or an unknown key stops with one `error:` line naming it."""
  from maskgit_jax import cli  # pylint: disable=import-outside-toplevel
  config = cli.load_config_file(os.path.join(ROOT, path)
                                if not os.path.isabs(path) else path)
  for item in sets:
    key, sep, raw = item.partition("=")
    if not sep:
      raise SystemExit(f"error: --set {item!r}: expected KEY=VALUE")
    try:
      value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
      value = raw
    node = config
    *parents, leaf = key.split(".")
    try:
      for k in parents:
        node = node[k]
      known = leaf in node
    except (KeyError, AttributeError, TypeError):  # a missing or leaf parent
      known = False
    if not known:
      raise SystemExit(f"error: unknown config key {key!r} in {path}")
    node[leaf] = value
  if batch_size:
    for stage in config.stages:
      config[f"{stage}_training"].batch_size = batch_size
  return config
