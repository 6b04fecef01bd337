"""A training run's final models as released-format files (`export`)."""

import os
import shutil
from typing import Dict

import flax
import jax

from maskgit_jax.common import files
from maskgit_jax.store import loader


def export(workdir: str, output: str) -> Dict[str, str]:
  """Writes WORKDIR's newest weights of both stages (EMA preferred) as
  OUTPUT/{tokenizer,transformer}.msgpack, with OUTPUT/config.json; all three
  files or none (a failure leaves OUTPUT as it was). OUTPUT may be an
  earlier export, never a training run (WORKDIR itself included): a
  ValueError. Returns their paths."""
  loader.check_workdir(workdir)
  files.check_output_location(os.path.join(output, loader.CONFIG_FILE))
  for stage in loader.STAGES:  # A run's files would shadow its checkpoints.
    if os.path.isdir(loader.checkpoint_dir(output, stage)):
      raise ValueError(
          f"--output={output} is a training run (it has "
          f"{loader.checkpoint_dir(output, stage)}): its config.json would "
          "be replaced and the exported files read instead of its "
          "checkpoints; export into a new folder.")
  config = os.path.join(workdir, loader.CONFIG_FILE)
  if not os.path.isfile(config):
    raise loader.RunNotFound(f"{workdir}: config.json is missing.")
  writes, paths = [], {}
  for stage in loader.STAGES:
    data = flax.serialization.to_bytes(
        jax.device_get(loader.stage_params(workdir, stage)))
    paths[stage] = os.path.join(output, f"{stage}.msgpack")
    writes.append((paths[stage], files.bytes_writer(data)))
  paths["config"] = os.path.join(output, loader.CONFIG_FILE)
  writes.append((paths["config"], lambda p: shutil.copyfile(config, p)))
  files.atomic_writes(writes)
  return paths
