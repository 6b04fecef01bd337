"""WORKDIR/config.json: the config that trained the run, kept true on resume.

A new run records its resolved config. A resumed run compares the config it
was started with against the record:
- the same: nothing to do;
- only keys that do not change what the weights are (how long to train,
  how often to log, save or evaluate, sampling and evaluation settings, the
  mesh, cpu_devices): the change is recorded (WORKDIR/config_changes.jsonl gets one line
  per resume with each key's old and new value) and config.json is updated;
- any other key (model sizes, data, optimizer, seed, ...): the run stops
  with one line naming the keys that differ (and, where flags can set them,
  the `--config.KEY=VALUE` overrides that resume it as it was trained), and
  nothing is written. Train into a new workdir instead.
A model field recorded as None (the preset's value, or the model's default)
equals that value given explicitly: an old run whose config file now sets
the field otherwise resumes with `--config.KEY=<that value>`, which the
refusal offers.
So `sample` and `evaluate`, which read config.json, always load the weights
with the config that trained them. A new run that fails before it saves
anything removes the record it wrote (`discard_if_untrained`): it describes
no weights.
"""

import datetime
import json
import os
import shlex
from typing import Any, Callable, Dict, List, Optional, Tuple

import jax
import ml_collections

from maskgit_jax.common import files
from maskgit_jax.nets import factory

CONFIG_FILE = "config.json"
CHANGES_FILE = "config_changes.jsonl"
# Keys (last component) that may change when a run is resumed.
FREE_KEYS = frozenset((
    "num_steps", "log_every", "checkpoint_every", "image_every",
    "keep_checkpoints", "async_checkpoints", "tensorboard", "stages",
    "worker_count", "read_threads", "prefetch_batches", "per_class",
    # How a model computes, not what: the same weights resume (a run
    # recorded before `tokenizer.group_norm` existed resumes with the
    # demo's "matmul"; the precision of the products, whose parameters are
    # float32 either way, may change with the machine: "auto").
    "remat", "group_norm", "dtype",
    # A new run plans its lengths from it once; a resume keeps them.
    "time_budget_s"))
# Sections whose keys may all change.
FREE_SECTIONS = ("sampling", "evaluation", "quality_targets", "mesh",
                 "cpu_devices", "logical_axis_rules")


def _flat(tree: Any, prefix: str = "") -> Dict[str, Any]:
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_flat(v, f"{prefix}{k}."))
    return out
  return {prefix[:-1]: tree}


def differences(old: Dict[str, Any], new: Dict[str, Any]
                ) -> List[Tuple[str, Any, Any]]:
  """(key, old value, new value) of every leaf that differs, sorted.

  A key missing on one side equals None there: a field that a newer config
  adds as None (a preset's value) does not differ from a record without it.
  """
  a, b = _flat(old), _flat(new)
  out = []
  for key in sorted(set(a) | set(b)):
    va, vb = a.get(key), b.get(key)
    if va != vb:
      out.append((key, va, vb))
  return out


def effective(tree: Dict[str, Any], other: Dict[str, Any]
              ) -> Dict[str, Any]:
  """A config (as config.json holds it) with the model sections' None
  fields, and those only `other` has (a record from before they existed),
  set to the values the models get (`factory.effective_fields`): a field
  recorded as None (the preset's value) equals the same value given
  explicitly, on resume and in the overrides offered."""
  if not isinstance(tree, dict):
    return tree
  out = dict(tree)
  for section, values in tree.items():
    theirs = other.get(section) if isinstance(other, dict) else None
    if isinstance(values, dict) and isinstance(theirs, dict):
      values = {**{k: None for k in theirs}, **values}
    out[section] = factory.effective_fields(section, values)
  return out


def is_free(key: str) -> bool:
  """Whether `key` may change when a run is resumed."""
  return (key.split(".")[0] in FREE_SECTIONS or
          key.split(".")[-1] in FREE_KEYS)


def _field_type(config: ml_collections.ConfigDict, key: str) -> Any:
  """The type of `config`'s field at dotted `key`, None when it has none."""
  *parents, leaf = key.split(".")
  try:
    for p in parents:
      config = config[p]
    return config.get_type(leaf)
  except (KeyError, AttributeError, TypeError):
    return None


def resume_flags(fixed: List[Tuple[str, Any, Any]],
                 config: ml_collections.ConfigDict) -> str:
  """The command-line overrides that give back the recorded values of
  `fixed` ((key, recorded, new) triples) in `config`, e.g.
  "--config.tokenizer.encoder_spatial_levels=None"; "" when a recorded
  value cannot be set by a flag as it was recorded: a list or a section, a
  key `config` lacks, a value of another type than the field's, or None for
  a field not typed `object` (the flag parser of a placeholder(int) field
  rejects "None")."""
  out = []
  for key, old, _ in fixed:
    kind = _field_type(config, key)
    if kind is object:
      settable = old is None or isinstance(old, (bool, int, float, str))
    elif kind in (bool, int, float, str):
      settable = (type(old) is kind or  # bool is no int here
                  (kind is float and type(old) is int))
    else:
      settable = False
    if not settable:
      return ""
    out.append(shlex.quote(f"--config.{key}={old}"))
  return " ".join(out)


def record(config: ml_collections.ConfigDict, workdir: str,
           log: Callable[[str], Any] = print,
           flag_types: Optional[ml_collections.ConfigDict] = None) -> str:
  """Writes (or checks and updates) WORKDIR/config.json; see the module doc.

  `flag_types`: the config as the command line gave it, whose field types
  decide which overrides a refused resume can offer (`resume_flags`), when
  `config` was rebuilt from values (`auto_config.resolve`), losing them.

  Raises:
    ValueError: a resumed run's config differs in a key that changes the
      weights (one line naming the keys).
  """
  path = os.path.join(workdir, CONFIG_FILE)
  text = files.config_to_json(config)
  new = json.loads(text)
  if os.path.isfile(path):
    try:
      with open(path) as f:
        old = json.load(f)
    except (OSError, ValueError) as e:
      raise ValueError(f"{path} is unreadable ({e}); this run's settings "
                       "are unknown. Train into a new workdir.") from None
    diff = differences(effective(old, new), effective(new, old))
    if not diff:
      return path
    fixed = [d for d in diff if not is_free(d[0])]
    if fixed:
      shown = ", ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in fixed[:5])
      more = f" (and {len(fixed) - 5} more)" if len(fixed) > 5 else ""
      # The offer gives back the recorded step counts too (free keys,
      # which a run may be resumed with to train longer): a phase that
      # starts at a fixed step (disc_start_step) needs the length it was
      # recorded with.
      lengths = [d for d in diff if d[0].split(".")[-1] == "num_steps"]
      flags = resume_flags(fixed + lengths, config if flag_types is None
                           else flag_types)
      hint = (f", or resume it as it was trained with {flags}" if flags
              else "")
      raise ValueError(
          f"{workdir} was trained with other settings: {shown}{more}. "
          f"Resuming would mix them; train into a new --workdir{hint}.")
    if jax.process_index() == 0:
      line = json.dumps({
          "time": datetime.datetime.now(datetime.timezone.utc).isoformat(
              timespec="seconds"),
          "changes": {k: {"old": a, "new": b} for k, a, b in diff}})
      changes = os.path.join(workdir, CHANGES_FILE)
      previous = open(changes).read() if os.path.isfile(changes) else ""
      files.atomic_writes([(changes, lambda p: open(p, "w").write(
          previous + line + "\n")), (path, lambda p: open(p, "w").write(
              text))])
    log(f"resumed with changed settings (recorded in {CHANGES_FILE}): " +
        ", ".join(k for k, _, _ in diff))
    return path
  if jax.process_index() == 0:
    files.write_text(path, text)
  return path


def rewrite(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Replaces WORKDIR/config.json with `config` before anything it changes
  has trained (a new run's planned lengths: time_budget.py)."""
  if jax.process_index() == 0:
    files.write_text(os.path.join(workdir, CONFIG_FILE),
                     files.config_to_json(config))


def discard_if_untrained(workdir: str, stages, log: Callable[[str], Any] = print
                         ) -> bool:
  """Removes WORKDIR/config.json when no stage folder (`WORKDIR/<stage>` for
  each of `stages`) holds a file: no checkpoint, finished or not, and no
  stage-1 feature network. Called when a run that wrote a new record fails,
  so that the record of weights that do not exist does not refuse the
  corrected command. Returns whether it was removed."""
  for stage in stages:
    for _, _, names in os.walk(os.path.join(workdir, stage)):
      if names:
        return False
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    return False
  os.remove(path)
  log(f"removed {path}: the run stopped before it saved anything")
  return True
