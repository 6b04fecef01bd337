"""Shared command-line plumbing: config-override checks and one-line errors."""

import importlib.util
import os
import sys
from typing import Callable, Sequence

from absl import app
from absl import flags
from absl import logging
import ml_collections

from maskgit_jax.common import allocator


def _config_path(argv: Sequence[str], name: str):
  for i, arg in enumerate(argv):
    if arg.startswith(f"--{name}="):
      return arg.split("=", 1)[1]
    if arg == f"--{name}" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def load_config_file(path: str) -> ml_collections.ConfigDict:
  """Runs `get_config()` of a config file (a path, as `--config` takes).

  A missing file, a file that is not Python (such as a run's config.json),
  or one that fails to run exits with one `error:` line naming the file.
  """
  path = path.split(":", 1)[0]
  if not os.path.isfile(path):
    raise SystemExit(f"error: config file not found: {path}")
  if not path.endswith(".py"):
    hint = (" (a run's config.json is read from its folder: pass "
            "--workdir=RUN and no --config)" if path.endswith(".json") else "")
    raise SystemExit(f"error: --config={path}: a config is a Python file with "
                     f"get_config(), such as configs/fashion_mnist.py{hint}")
  spec = importlib.util.spec_from_file_location("maskgit_cli_config", path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
      raise SystemExit(f"error: {path} has no get_config() function")
    return module.get_config()
  except SystemExit:
    raise
  except Exception as e:  # pylint: disable=broad-except
    where = f" (line {e.lineno})" if isinstance(e, SyntaxError) else ""
    raise SystemExit(f"error: config file {path}{where}: "
                     f"{type(e).__name__}: {e}") from None


def check_config_overrides(argv: Sequence[str], name: str = "config") -> None:
  """Exits with one line if `--config=FILE` is missing, not Python or
  broken, or a `--config.a.b=v` names a key the config lacks."""
  overrides = [a[len(f"--{name}."):].split("=", 1)[0] for a in argv
               if a.startswith(f"--{name}.")]
  path = _config_path(argv, name)
  if not overrides:
    if path is not None:
      load_config_file(path)  # one line for a missing or broken file
    return
  if path is None:
    raise SystemExit(f"error: --{name}.* overrides need --{name}=FILE")
  config = load_config_file(path)
  for dotted in overrides:
    node = config
    for depth, key in enumerate(dotted.split(".")):
      if not isinstance(node, ml_collections.ConfigDict) or key not in node:
        where = ".".join(dotted.split(".")[:depth]) or "the top level"
        known = sorted(node.keys()) if isinstance(
            node, ml_collections.ConfigDict) else []
        raise SystemExit(
            f"error: unknown config key '{dotted}' in {path} "
            f"(no '{key}' at {where}; known there: {', '.join(known)})")
      node = node[key]


def parse_flags(argv: Sequence[str]):
  """absl's flag parsing, with a bad value (e.g. `--config.x.batch_size=abc`)
  as one `error:` line instead of absl's two-line FATAL message."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    message = " ".join(str(e).split()) or type(e).__name__
    raise SystemExit(f"error: {message}") from None


def run(main: Callable[[Sequence[str]], None]) -> None:
  """`absl.app.run(main)` after checking `--config.*` overrides, in a
  process with tcmalloc preloaded when it is installed (`allocator`)."""
  allocator.maybe_reexec()
  check_config_overrides(sys.argv[1:])
  app.call_after_init(_quiet_logs)
  app.run(main, flags_parser=parse_flags)


def _quiet_logs() -> None:
  """Library INFO logs (orbax, XLA) off unless asked for with -v/--verbosity."""
  if not any(a.startswith(("-v", "--verbosity", "--v=")) for a in sys.argv[1:]):
    logging.set_verbosity(logging.WARNING)
