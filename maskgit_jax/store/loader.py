"""The one place that finds and loads a model's weights.

Training's frozen tokenizer (stage 2), `sample`, `evaluate`, `export`, the
notebook and the benchmarks all call `load_models` (or `load_stage`). For
each stage the weights come from the first of:

  1. variables passed in (`{"params": ...}`, e.g. the training hook's);
  2. a released-format file named explicitly (`tokenizer_checkpoint=`,
     `transformer_checkpoint=`; Flax msgpack of `{"params": ...}`, the
     format of the released MaskGIT files);
  3. WORKDIR/<stage>.msgpack: a folder written by `python -m maskgit_jax.export`;
  4. (tokenizer only) `config.tokenizer_checkpoint`, a released-format file
     that a run trained its stage 2 on (after 5 when `config.stages`
     includes the tokenizer: such a run trained stage 2 on its own);
  5. the newest readable checkpoint in WORKDIR/<stage>/checkpoints (EMA
     parameters when the checkpoint has them);
  6. random weights (seed `config.seed`), only when `random_init=True`.

Every tree is checked against the config's model before it is returned: a
tree of another model size is a ValueError naming the first parameter that
differs, with both shapes. A stage that is required and found nowhere is a
`WeightsNotFound` (a FileNotFoundError) saying where it looked.

The config that goes with a workdir is the one that trained it:
`run_config(workdir)` reads WORKDIR/config.json.
"""

import dataclasses
import os
from typing import Any, Dict, Optional, Sequence, Tuple

import jax
import ml_collections
import numpy as np

from maskgit_jax.common import checks
from maskgit_jax.common import files
from maskgit_jax.nets import factory
from maskgit_jax.nets import layer_stack
from maskgit_jax.store import checkpoint as checkpoint_lib
from maskgit_jax.store import released

STAGES = ("tokenizer", "transformer")
CONFIG_FILE = "config.json"


class RunNotFound(FileNotFoundError, ValueError):
  """A workdir (or its config.json) that does not exist."""


class WeightsNotFound(FileNotFoundError, ValueError):
  """A stage whose weights were asked for and found nowhere."""


def check_workdir(workdir: str) -> None:
  """Raises RunNotFound unless `workdir` is an existing folder."""
  if not os.path.isdir(workdir):
    why = ("a file, not a folder" if os.path.exists(workdir)
           else "it does not exist")
    raise RunNotFound(f"Training run folder not found: {workdir} ({why})")


def run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config that trained the run in `workdir` (WORKDIR/config.json)."""
  check_workdir(workdir)
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    raise RunNotFound(f"{path} does not exist: is {workdir} a training run "
                      "or an exported folder? (or pass --config=FILE)")
  return files.read_config_json(path)


def checkpoint_dir(workdir: str, stage: str) -> str:
  """WORKDIR/<stage>/checkpoints."""
  return os.path.join(workdir, stage, "checkpoints")


def checkpoint_steps(directory: str):
  """Sorted steps of the orbax checkpoints in `directory` ([] if none)."""
  if not os.path.isdir(directory):
    return []
  with checkpoint_lib.read_only_manager(directory) as manager:
    return sorted(manager.all_steps())


def exported_file(workdir: Optional[str], stage: str) -> Optional[str]:
  """WORKDIR/<stage>.msgpack when WORKDIR is an exported folder, else None."""
  if not workdir:
    return None
  path = os.path.join(workdir, f"{stage}.msgpack")
  return path if os.path.isfile(path) else None


def _roundtrip(module, images):
  return module.decode_from_indices(module.encode_to_indices(images))


def example_inputs(config: ml_collections.ConfigDict, stage: str, module
                   ) -> Tuple[tuple, dict]:
  """(args, kwargs) for `module.init` that create every variable of `stage`."""
  if stage == "tokenizer":
    images = np.zeros((1, config.image_size, config.image_size,
                       module.channels), np.float32)
    return (images,), {"method": _roundtrip}
  ids = np.zeros((1, module.max_position_embeddings), np.int32)
  return (ids,), {}


def expected_tree(config, stage: str, module):
  """The variable tree (shapes) that `stage`'s model of `config` has."""
  args, kwargs = example_inputs(config, stage, module)
  return released.model_shapes(module, *args, **kwargs)


def load_stage(config: ml_collections.ConfigDict, stage: str, module, *,
               workdir: Optional[str] = None, file: Optional[str] = None,
               variables=None, random_init: bool = False,
               required: bool = True, step: Optional[int] = None
               ) -> Tuple[Optional[Dict[str, Any]], Dict[str, Any]]:
  """One stage's variables, by the order of precedence of the module doc.

  `step` picks that step's checkpoint in WORKDIR/<stage>/checkpoints instead
  of the newest; a ValueError when the weights would come from elsewhere
  (given variables, a file) or the step has no readable checkpoint.

  Returns:
    (`{"params": ...}` or None when nothing was found and not `required`,
     info: {"source": "given" | "file" | "workdir" | "random", "path",
     "step", ...}; {} when nothing was found).

  Raises:
    WeightsNotFound: `required` and nothing found.
    ValueError, FileNotFoundError: a bad file, or a tree that does not fit
      the config's model (one line, naming it).
  """
  if stage not in STAGES:
    raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
  args, kwargs = example_inputs(config, stage, module)
  if step is not None and variables is not None:
    raise ValueError(f"a {stage} step ({step}) picks a training run's "
                     "checkpoint, but the variables were given")
  if variables is not None:
    variables = released.to_module_layout(variables, module)
    released.check_tree(variables, released.model_shapes(
        module, *args, **kwargs), f"the given {stage} variables")
    # Host copies: arrays sharded over a training mesh would pin a later
    # jitted use to that mesh.
    return jax.device_get(variables), {"source": "given", "path": None,
                                       "step": None}
  path = file or exported_file(workdir, stage)
  released_file = None
  if not path and stage == "tokenizer":
    released_file = config.get("tokenizer_checkpoint", "") or None
  # A run that trains its own tokenizer (config.stages has it) trained stage
  # 2 on that tokenizer, not on config.tokenizer_checkpoint: its checkpoints
  # come first (configs recorded before that key was refused beside the
  # stage could name both).
  trained_here = "tokenizer" in tuple(config.get("stages", ()) or ())
  if released_file and not (trained_here and workdir):
    path = released_file
  if path and step is not None:
    raise ValueError(f"--{stage}_step={step} picks a checkpoint of a "
                     f"training run, but the {stage}'s weights come from the "
                     f"file {path}")
  if path:
    loaded = released.load_variables(path, module, *args, **kwargs)
    return loaded, {"source": "file", "path": os.path.abspath(path),
                    "step": None}
  directory = checkpoint_dir(workdir, stage) if workdir else None
  if step is not None and not directory:
    raise ValueError(f"--{stage}_step={step} needs a training run's "
                     "workdir")
  if directory:
    with checkpoint_lib.quiet_orbax():
      restored, info = checkpoint_lib.restore_params_with_info(directory,
                                                               step=step)
    if restored is not None:
      restored = released.to_module_layout(restored, module)
      released.check_tree(restored, released.model_shapes(
          module, *args, **kwargs), f"{directory}/{info['step']}")
      return restored, {"source": "workdir", "path": directory, **info}
  if released_file and not path:  # No checkpoint of its own (yet).
    loaded = released.load_variables(released_file, module, *args, **kwargs)
    return loaded, {"source": "file", "path": os.path.abspath(released_file),
                    "step": None}
  if random_init:
    # As before the one loader: PRNGKey(seed) split into (tokenizer,
    # transformer) keys.
    rng = jax.random.split(jax.random.PRNGKey(config.seed))[
        STAGES.index(stage)]
    if stage == "tokenizer":
      init = factory.init_tokenizer(module, rng, config.image_size)
    else:
      init = factory.init_transformer(module, rng)
    return {"params": init["params"]}, {"source": "random", "path": None,
                                        "step": None}
  if required:
    where = (f"No readable checkpoint in {directory}" if directory
             else "No weights given")
    extra = (" and config.tokenizer_checkpoint is empty"
             if stage == "tokenizer" else "")
    raise WeightsNotFound(f"{where} (the {stage}: no --{stage}_checkpoint "
                          f"file{extra})")
  return None, {}


@dataclasses.dataclass
class LoadedModels:
  """The models of a config and whichever variables were found.

  Attributes:
    tokenizer, transformer: the modules built from the config.
    tokenizer_variables, transformer_variables: `{"params": ...}` or None.
    sources: {stage: {"source", "path", "step", ...}} for the stages that
      have variables (see `load_stage`).
  """
  tokenizer: Any
  transformer: Any
  tokenizer_variables: Optional[Dict[str, Any]] = None
  transformer_variables: Optional[Dict[str, Any]] = None
  sources: Dict[str, Dict[str, Any]] = dataclasses.field(default_factory=dict)

  def variables(self, stage: str):
    return getattr(self, f"{stage}_variables")


def load_models(config: ml_collections.ConfigDict,
                workdir: Optional[str] = None, *,
                tokenizer_checkpoint: Optional[str] = None,
                transformer_checkpoint: Optional[str] = None,
                tokenizer_variables=None, transformer_variables=None,
                random_init: bool = False,
                stages: Sequence[str] = STAGES,
                required: Sequence[str] = (),
                activation_rules=None,
                steps: Optional[Dict[str, int]] = None) -> LoadedModels:
  """Builds the config's models and finds their variables.

  Args:
    config: the run's config (see `run_config`).
    workdir: a training run or an exported folder (checked to exist).
    tokenizer_checkpoint, transformer_checkpoint: released-format files.
    tokenizer_variables, transformer_variables: `{"params": ...}` trees.
    random_init: random weights where nothing else is found.
    stages: the stages to look for (others stay None).
    required: stages that must be found (WeightsNotFound otherwise).
    activation_rules: logical axis rules of the transformer's activations.
    steps: {stage: step}: that step's checkpoint of the workdir instead of
      the newest (see `load_stage`).

  Returns:
    LoadedModels.
  """
  if workdir:
    check_workdir(workdir)
  tokenizer = factory.tokenizer_from_config(config)
  transformer = factory.transformer_from_config(
      config, activation_rules=activation_rules)
  out = LoadedModels(tokenizer, transformer)
  steps = {k: v for k, v in (steps or {}).items() if v is not None}
  for stage, step in steps.items():
    if stage not in STAGES:
      raise ValueError(f"unknown stage {stage!r} in steps; expected one of "
                       f"{STAGES}")
    if stage not in stages:
      raise ValueError(f"--{stage}_step={step} but the {stage} is not "
                       "loaded here")
    checks.check_int(f"--{stage}_step", step, low=0, note="a step")
  given = {"tokenizer": (tokenizer_checkpoint, tokenizer_variables),
           "transformer": (transformer_checkpoint, transformer_variables)}
  for stage in STAGES:
    if stage not in stages:
      continue
    file, variables = given[stage]
    found, info = load_stage(
        config, stage, getattr(out, stage), workdir=workdir, file=file,
        variables=variables, random_init=random_init,
        required=stage in required, step=steps.get(stage))
    setattr(out, f"{stage}_variables", found)
    if info:
      out.sources[stage] = info
  return out


def stage_params(workdir: str, stage: str) -> Dict[str, Any]:
  """`{"params": ...}` of a stage's newest checkpoint (EMA preferred), as
  numpy arrays, without a config (what `export` writes), with a scanned
  transformer's layers in the release's layout."""
  directory = checkpoint_dir(workdir, stage)
  with checkpoint_lib.quiet_orbax():
    variables, _ = checkpoint_lib.restore_params_with_info(directory)
  if variables is None:
    raise WeightsNotFound(f"{workdir}: no {stage} checkpoint to export "
                          f"(nothing in {directory})")
  if isinstance(variables.get("params"), dict):
    variables = {**variables, "params": layer_stack.to_layout(
        variables["params"], scanned=False)}
  return variables
