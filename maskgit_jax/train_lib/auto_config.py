"""Config fields derived from the data and the image size, at train start.

`configs/folder.py` leaves these fields None ("auto"; the string "auto" is
accepted too), and `resolve(config, workdir)`, called by
`train_and_evaluate` before anything trains, fills them; the resolved config
is what WORKDIR/config.json records, so sampling and evaluation read the
true values:

  num_classes, class_names  config.data.source='folder': the class
                            sub-folders (sorted names); a flat folder is
                            unconditional: 1 class, named after the folder
  tokenizer.channels        'folder': 3 if any image is colour, 1 if every
                            image is grey (`maskgit_jax.data.folder_info`)
  tokenizer sizes           SIZE_KEYS from TOKENIZER_SIZES[config.image_size]
                            (any source): 8x8 tokens at 16, 32, 64 and 128
                            pixels, one more 2x downsampling level per
                            doubling; with `tokenizer.preset` set, the
                            preset's values instead

Values set explicitly (in the config file or as --config.key=value) are kept
but must agree with the folder: a `num_classes`, or a number of
`class_names`, other than the folder's classes, or `tokenizer.channels=1`
for a folder holding colour images, raises a ValueError naming both values
(`python -m maskgit_jax.train` prints it as one `error:` line). It is raised
before anything is written, except the folder's index cache in
WORKDIR/data_index of an existing WORKDIR (a WORKDIR made for it is removed
again). `tokenizer.channels=3` on an all-grey folder is allowed
(grey is replicated to RGB) and noted. Resuming a run whose checkpoints were
trained with other derived values (the folder changed) is refused the same
way.
"""
import json
import os
import shutil
from typing import Any, Callable, Dict, List, Optional

import ml_collections

from maskgit_jax.data import folder_info as folder_info_lib

SIZE_KEYS = ("filters", "channel_multipliers", "num_res_blocks",
             "embedding_dim", "codebook_size", "num_groups", "code_dim",
             "l2_normalized")
# The "small" preset's codebook (512 l2-normalised 16-d codes, factorised from
# 64-d features) at every size; one more average-pool level per doubling of
# the image size keeps the token grid at 8x8 (the transformer's sequence:
# 64 + 1 tokens). Widths per resolution: 64 channels at 16x16 and 8x8, 32 at
# 32x32, 16 at 64x64 and 128x128, so each level costs about the same.
_CODEBOOK = dict(num_res_blocks=1, embedding_dim=64, codebook_size=512,
                 num_groups=8, code_dim=16, l2_normalized=True)
TOKENIZER_SIZES = {
    16: dict(_CODEBOOK, filters=64, channel_multipliers=(1, 1)),
    32: dict(_CODEBOOK, filters=32, channel_multipliers=(1, 2, 2)),
    64: dict(_CODEBOOK, filters=16, channel_multipliers=(1, 2, 4, 4)),
    128: dict(_CODEBOOK, filters=16, channel_multipliers=(1, 1, 2, 4, 4)),
}
FOLDER_KEYS = ("num_classes", "class_names", "tokenizer.channels")


def is_auto(value: Any) -> bool:
  """None or "auto": the field is derived by `resolve`."""
  return value is None or (isinstance(value, str) and value == "auto")


def tokenizer_size(image_size: int) -> Dict[str, Any]:
  """The tokenizer size fields (SIZE_KEYS) picked for `image_size`."""
  if image_size not in TOKENIZER_SIZES:
    raise ValueError(
        f"config.image_size={image_size} has no automatic tokenizer size "
        f"(sizes: {', '.join(map(str, sorted(TOKENIZER_SIZES)))}); set "
        "config.tokenizer.preset or every tokenizer size field "
        f"({', '.join(SIZE_KEYS)}).")
  return dict(TOKENIZER_SIZES[image_size])


def _get(values: Dict[str, Any], dotted: str, default=None) -> Any:
  node = values
  for key in dotted.split("."):
    if not isinstance(node, dict) or key not in node:
      return default
    node = node[key]
  return node


def auto_fields(values: Dict[str, Any]) -> List[str]:
  """Dotted names of the fields `resolve` will fill (of `config.to_dict()`)."""
  tok = values.get("tokenizer") or {}
  names = [k for k in ("num_classes", "class_names")
           if k in values and is_auto(values[k])]
  # With a preset, an unset size is the preset's (nets/factory), not derived.
  sizes = () if tok.get("preset") else SIZE_KEYS
  names += [f"tokenizer.{k}" for k in ("channels",) + sizes
            if k in tok and is_auto(tok[k])]
  return names


def _fill_sizes(values: Dict[str, Any], notes: List[str]) -> None:
  tok = values["tokenizer"]
  auto = [k for k in SIZE_KEYS if k in tok and is_auto(tok[k])]
  if not auto:
    return
  if tok.get("preset"):  # The preset supplies what is left unset.
    for k in auto:
      del tok[k]
    return
  size = tokenizer_size(values["image_size"])
  for k in auto:
    tok[k] = size[k]
  factor = 2 ** (len(tok["channel_multipliers"]) - 1)
  grid = values["image_size"] // factor
  notes.append(
      f"tokenizer for {values['image_size']}x{values['image_size']} images "
      f"({grid}x{grid} tokens): " +
      ", ".join(f"{k}={tok[k]}" for k in auto))


def _folder_values(values: Dict[str, Any], info: folder_info_lib.FolderInfo,
                   notes: List[str]) -> None:
  """Fills and checks num_classes, class_names, tokenizer.channels."""
  where = f"the image folder {info.root}"
  n = values.get("num_classes")
  if is_auto(n):
    values["num_classes"] = info.num_classes
  elif n != info.num_classes:
    raise ValueError(
        f"config.num_classes={n!r} but {where} has "
        f"{info.describe_classes()}: set num_classes={info.num_classes} or "
        "leave it unset (configs/folder.py derives it).")
  names = values.get("class_names")
  if is_auto(names) or not tuple(names):
    values["class_names"] = info.class_names
  elif len(tuple(names)) != info.num_classes:
    shown = ", ".join(map(str, tuple(names)[:6]))
    more = ", ..." if len(tuple(names)) > 6 else ""
    raise ValueError(
        f"config.class_names has {len(tuple(names))} names ({shown}{more}) "
        f"but {where} has {info.describe_classes()}: give "
        f"{info.num_classes} names, or set class_names=() to use the folder "
        "names.")
  tok = values["tokenizer"]
  channels = tok.get("channels", 3)
  if is_auto(channels):
    tok["channels"] = info.channels
  elif channels == 1 and info.channels == 3:
    raise ValueError(
        f"config.tokenizer.channels=1 but {where} holds "
        f"{info.describe_channels()}: set tokenizer.channels=3 or leave it "
        "unset (configs/folder.py derives it).")
  elif channels == 3 and info.channels == 1:
    notes.append(f"{where} holds only grey images; training 3 channels as "
                 "configured (tokenizer.channels=3).")
  notes.insert(0, (
      f"{where}: {info.num_images} images, {info.describe_classes()}, "
      f"{info.describe_channels()} -> num_classes={values['num_classes']}, "
      f"tokenizer.channels={tok['channels']}"))


def _has_checkpoints(workdir: str) -> bool:
  for stage in ("tokenizer", "transformer"):
    folder = os.path.join(workdir, stage, "checkpoints")
    if os.path.isdir(folder) and any(
        e.isdigit() for e in os.listdir(folder)):
      return True
  return False


def _plain(value: Any) -> Any:
  """Tuples as lists, for comparing with values read from JSON."""
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  return value


def check_existing_run(values: Dict[str, Any], workdir: str,
                       derived: List[str]) -> None:
  """Refuses to resume checkpoints trained with other derived values."""
  path = os.path.join(workdir, "config.json")
  if not derived or not os.path.isfile(path) or not _has_checkpoints(workdir):
    return
  try:
    with open(path) as f:
      previous = json.load(f)
  except (OSError, ValueError):
    return
  for dotted in derived:
    old = _get(previous, dotted)
    new = _get(values, dotted)
    if old is not None and new is not None and _plain(old) != _plain(new):
      raise ValueError(
          f"{workdir} holds checkpoints trained with {dotted}={old!r} "
          f"({path}) but the data now gives {dotted}={new!r}: train into a "
          "new --workdir, or restore the data.")


def resolve(config: ml_collections.ConfigDict, workdir: Optional[str] = None,
            log: Optional[Callable[[str], None]] = None
            ) -> ml_collections.ConfigDict:
  """`config` with its derived fields filled (see the module docstring).

  Args:
    config: a training config; returned as it is when no field is auto and
      the data are not a folder.
    workdir: the run folder: the index cache goes to `workdir/data_index`,
      and an existing run's config.json is compared with the result.
    log: called with one line per derived group of fields.

  Returns:
    A new (unlocked) ConfigDict holding the resolved values.

  Raises:
    ValueError: a missing data.path, an explicit value contradicting the
      folder, an auto field that this source cannot derive, or an image size
      without an automatic tokenizer size.
    FileNotFoundError: the folder does not exist.
  """
  values = config.to_dict()
  data = values.get("data") or {}
  derived = auto_fields(values)
  folder = data.get("source") == "folder"
  if not derived and not folder:
    return config
  notes: List[str] = []
  if "tokenizer" in values:
    _fill_sizes(values, notes)
  if folder:
    if not data.get("path"):
      raise ValueError(
          "config.data.path is not set: pass --config.data.path=DIR, a "
          "folder of images (one sub-folder per class, or a flat folder).")
    created = bool(workdir) and not os.path.exists(workdir)
    try:
      info = folder_info_lib.inspect_folder(
          data["path"], validate=data.get("validate", "header"),
          cache_dir=os.path.join(workdir, "data_index") if workdir else None)
      _folder_values(values, info, notes)
    except (ValueError, OSError):
      if created:  # Made only for the index cache: leave no trace.
        shutil.rmtree(workdir, ignore_errors=True)
      raise
  else:
    if is_auto(values.get("class_names", ())):
      values["class_names"] = ()
    left = [k for k in FOLDER_KEYS if k != "class_names" and
            is_auto(_get(values, k, 0))]
    if left:
      raise ValueError(
          f"config.{left[0]} is auto, which only config.data.source="
          f"'folder' derives (source is {data.get('source')!r}): set "
          f"--config.{left[0]}.")
  if workdir:
    check_existing_run(values, workdir, derived)
  for note in notes:
    if log:
      log(note)
  return ml_collections.ConfigDict(values)
