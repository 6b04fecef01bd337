"""Reliability: corrupt checkpoints, NaN/Inf losses, bad input, hostile files.

The slow halves (kill -9 of a real run, a config/input fuzz loop) are in
benchmarks/reliability.py (`make reliability`). Here:
  * a corrupted or truncated latest checkpoint: resume from the previous good
    one with a warning naming the bad one, which is moved aside (never
    deleted) so its step can be saved again; never silently wrong values;
  * NaN or Inf in the loss: a stop naming the step, nothing broken saved, and
    one `error:` line from the command line;
  * bad configs and inputs on the command line: one `error:` line naming the
    key / value / file, no traceback;
  * loading our checkpoints, released-format msgpack files and TorchScript
    weights never runs code from them.
"""
import functools
import glob
import io
import json
import os
import pathlib
import pickle
import shutil
import subprocess
import sys
import zipfile

import flax
import jax
import jax.numpy as jnp
import ml_collections
import msgpack
import numpy as np
import pytest

from maskgit_jax.store import released
from maskgit_jax.nets import maskgit_transformer
from maskgit_jax.nets import torch_pickle
from maskgit_jax.store import checkpoint as checkpoint_lib
from maskgit_jax.train_lib import config_checks
from maskgit_jax.train_lib import sharding as sharding_lib
from maskgit_jax.train_lib import trainer
import conftest  # tests/conftest.py
import test_train

ROOT = pathlib.Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------
# A toy task for the real training loop (`trainer.run_task`): a linear model
# with momentum and EMA; compiles in well under a second.


class _Batches:
  """Batch k is a pure function of k; state is the next k (JSON)."""

  def __init__(self):
    self.next = 0

  def __next__(self):
    rng = np.random.default_rng(self.next)
    self.next += 1
    return {"image": rng.normal(size=(8, 4)).astype(np.float32),
            "label": rng.normal(size=(8,)).astype(np.float32)}

  def get_state(self):
    return {"next": self.next}

  def set_state(self, state):
    self.next = int(state["next"])


def _toy_task(num_steps, bad_step=None, bad_value=float("nan")):
  def init(rng):
    w = jax.random.normal(rng, (4,), jnp.float32)
    return trainer.TrainState(
        step=jnp.zeros((), jnp.int32), params={"w": w},
        opt_state={"m": jnp.zeros((4,), jnp.float32)}, rng=rng,
        ema_params={"w": w})

  def train_step(state, batch, frozen):
    del frozen
    x, y = batch["image"], batch["label"]
    loss, grad = jax.value_and_grad(
        lambda w: jnp.mean((x @ w - y) ** 2))(state.params["w"])
    m = 0.9 * state.opt_state["m"] + grad
    w = state.params["w"] - 0.05 * m
    step = state.step + 1
    if bad_step is not None:
      loss = jnp.where(step == bad_step, jnp.float32(bad_value), loss)
    return state.replace(
        step=step, params={"w": w}, opt_state={"m": m},
        rng=jax.random.fold_in(state.rng, step),
        ema_params={"w": 0.9 * state.ema_params["w"] + 0.1 * w}), {
            "loss": loss}

  return trainer.Task(name="toy", num_steps=num_steps, init=init,
                      train_step=train_step)


def _train(workdir, task, **overrides):
  config = ml_collections.ConfigDict(dict(
      log_every=1, checkpoint_every=2, image_every=0, keep_checkpoints=3,
      async_checkpoints=True, tensorboard=False))
  config.update(overrides)
  mesh = sharding_lib.make_mesh((1, 1, 1), jax.devices()[:1])
  return trainer.run_task(
      task, mesh=mesh, rules=(), workdir=str(workdir), batches=_Batches(),
      to_global=lambda b: jax.tree.map(jnp.asarray, b), config=config,
      rng=jax.random.PRNGKey(0))


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(_leaves(a), _leaves(b)):
    np.testing.assert_array_equal(x, y)


def _steps(checkpoint_dir):
  return sorted(int(n) for n in os.listdir(checkpoint_dir) if n.isdigit())


# ----------------------------------------------------------------------------
# Corrupted checkpoints.


def _files(step_dir, pattern):
  return [p for p in glob.glob(os.path.join(step_dir, pattern), recursive=True)
          if os.path.isfile(p)]


def _truncate(path):
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


def _garbage(path):
  size = max(os.path.getsize(path), 16)
  with open(path, "wb") as f:
    f.write(np.random.RandomState(0).bytes(size))


def _largest(step_dir, pattern):
  return max(_files(step_dir, pattern), key=os.path.getsize)


def _flip_bit(path, fraction):
  data = bytearray(pathlib.Path(path).read_bytes())
  data[int(len(data) * fraction)] ^= 0x10
  pathlib.Path(path).write_bytes(bytes(data))


def _zero_run(path, fraction):
  data = bytearray(pathlib.Path(path).read_bytes())
  start = int(len(data) * fraction)
  data[start:start + 8] = bytes(len(data[start:start + 8]))
  pathlib.Path(path).write_bytes(bytes(data))


def _empty_folder(step_dir):
  for p in glob.glob(os.path.join(step_dir, "*")):
    shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)


# Damage that must be detected: the restore falls back to the previous step.
CORRUPTIONS = {
    "array_files_truncated":
        lambda d: [_truncate(p) for p in _files(d, "state/**/d/*")],
    "array_files_garbage":
        lambda d: [_garbage(p) for p in _files(d, "state/**/d/*")],
    "array_files_zero_bytes":
        lambda d: [open(p, "wb").close() for p in _files(d, "state/**/d/*")],
    "tree_metadata_deleted":
        lambda d: os.remove(os.path.join(d, "state", "_METADATA")),
    "tree_metadata_garbage":
        lambda d: _garbage(os.path.join(d, "state", "_METADATA")),
    "ocdbt_manifests_deleted":
        lambda d: [os.remove(p) for p in _files(d, "state/**/manifest.ocdbt")],
    "state_item_deleted":
        lambda d: shutil.rmtree(os.path.join(d, "state")),
    "data_item_garbage":
        lambda d: _garbage(os.path.join(d, "data", "metadata")),
    # Orbax's array files have no checksum of the values: without the
    # Checkpointer's fingerprints these restore silently wrong numbers.
    "largest_array_file_one_bit_flipped":
        lambda d: _flip_bit(_largest(d, "state/**/d/*"), 0.5),
    "largest_array_file_bytes_zeroed":
        lambda d: _zero_run(_largest(d, "state/**/d/*"), 0.3),
    "data_item_value_edited": lambda d: _edit_json(
        pathlib.Path(d) / "data" / "metadata",
        lambda j: j.update(value={"next": 3})),
    "step_folder_emptied": _empty_folder,
    "every_file_truncated":
        lambda d: [_truncate(p) for p in _files(d, "**/*")],
}
# Damage to files the restore does not need: the values must still be exact.
HARMLESS = {
    "checkpoint_metadata_deleted":
        lambda d: os.remove(os.path.join(d, "_CHECKPOINT_METADATA")),
    "sharding_file_deleted":
        lambda d: os.remove(os.path.join(d, "state", "_sharding")),
    "commit_markers_deleted":
        lambda d: [os.remove(p) for p in _files(d, "**/commit_success.txt")],
}


def _state(offset):
  return {"params": {"w": jnp.arange(600, dtype=jnp.float32).reshape(20, 30)
                     + offset, "b": jnp.full((3,), offset, jnp.float32)},
          "ema_params": {"w": jnp.full((5,), offset, jnp.float32)},
          "step": jnp.int32(offset)}


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory):
  """A checkpoint folder with steps 2 and 4 (state = _state(step))."""
  path = tmp_path_factory.mktemp("two_checkpoints") / "checkpoints"
  ckpt = checkpoint_lib.Checkpointer(str(path), keep=3, async_save=False)
  for step in (2, 4):
    ckpt.save(step, _state(step), {"next": step})
  ckpt.close()
  return path


def _damaged_copy(two_checkpoints, tmp_path, damage):
  path = tmp_path / "checkpoints"
  shutil.copytree(two_checkpoints, path)
  damage(str(path / "4"))
  return path


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_corrupt_latest_checkpoint_falls_back_and_is_moved_aside(
    two_checkpoints, tmp_path, corruption):
  path = _damaged_copy(two_checkpoints, tmp_path, CORRUPTIONS[corruption])
  notes = []
  ckpt = checkpoint_lib.Checkpointer(str(path), keep=3, async_save=False)
  step, state, data_state = ckpt.restore_latest(
      jax.eval_shape(lambda: _state(0)), log=notes.append)
  assert step == 2 and data_state == {"next": 2}
  _assert_trees_equal(state, _state(2))
  assert f"Checkpoint {path / '4'} is unreadable" in notes[0], notes
  # Moved aside, not deleted, and out of orbax's step list.
  aside = [n for n in os.listdir(path) if n.startswith("4.corrupt-")]
  assert len(aside) == 1, os.listdir(path)
  assert f"aside to {path / aside[0]}" in notes[1], notes
  assert ckpt.all_steps() == [2]
  # The resumed run reaches step 4 again and must be able to save it.
  ckpt.save(4, _state(40), {"next": 4})
  ckpt.close()
  ckpt = checkpoint_lib.Checkpointer(str(path), keep=3, async_save=False)
  step, state, _ = ckpt.restore_latest(jax.eval_shape(lambda: _state(0)))
  ckpt.close()
  assert step == 4
  _assert_trees_equal(state, _state(40))
  assert (path / aside[0]).is_dir()


@pytest.mark.parametrize("damage", sorted(HARMLESS))
def test_damage_to_unneeded_files_still_restores_exact_values(
    two_checkpoints, tmp_path, damage):
  path = _damaged_copy(two_checkpoints, tmp_path, HARMLESS[damage])
  ckpt = checkpoint_lib.Checkpointer(str(path), keep=3, async_save=False)
  restored = ckpt.restore_latest(jax.eval_shape(lambda: _state(0)))
  ckpt.close()
  step, state, _ = restored
  _assert_trees_equal(state, _state(step))  # Never silently wrong values.
  if step == 4:
    assert _steps(path) == [2, 4]


def test_read_only_params_skip_a_corrupt_latest_without_moving_it(
    two_checkpoints, tmp_path):
  path = _damaged_copy(two_checkpoints, tmp_path,
                       CORRUPTIONS["array_files_truncated"])
  params, info = checkpoint_lib.restore_params_with_info(str(path))
  assert info == {"step": 2, "params": "ema", "unreadable": [4]}
  np.testing.assert_array_equal(params["params"]["w"],
                                _state(2)["ema_params"]["w"])
  assert _steps(path) == [2, 4]  # Readers never rename anything.


def test_training_resumes_past_a_truncated_latest_checkpoint(tmp_path, capsys):
  full = _train(tmp_path / "full", _toy_task(6))
  _train(tmp_path / "run", _toy_task(6))
  checkpoints = tmp_path / "run" / "checkpoints"
  assert _steps(checkpoints) == [2, 4, 6]
  for p in _files(str(checkpoints / "6"), "state/**/d/*"):
    _truncate(p)
  capsys.readouterr()
  resumed = _train(tmp_path / "run", _toy_task(6))
  out = capsys.readouterr().out
  assert f"Checkpoint {checkpoints / '6'} is unreadable" in out
  assert "resumed from step 4" in out
  _assert_trees_equal(resumed, full)
  # Step 6 was saved again; the bad one is kept beside it.
  assert _steps(checkpoints) == [2, 4, 6]
  assert [n for n in os.listdir(checkpoints) if n.startswith("6.corrupt-")]
  # A third run finds the repaired step 6: nothing left to train, no warning.
  again = _train(tmp_path / "run", _toy_task(6))
  out = capsys.readouterr().out
  assert "already trained (6 steps)" in out and "unreadable" not in out
  _assert_trees_equal(again, full)


def test_training_restarts_when_every_checkpoint_is_unreadable(tmp_path,
                                                               capsys):
  full = _train(tmp_path / "full", _toy_task(4))
  _train(tmp_path / "run", _toy_task(4))
  checkpoints = tmp_path / "run" / "checkpoints"
  for step in (2, 4):
    _empty_folder(str(checkpoints / str(step)))
  capsys.readouterr()
  resumed = _train(tmp_path / "run", _toy_task(4))
  out = capsys.readouterr().out
  assert out.count("is unreadable") == 2
  _assert_trees_equal(resumed, full)
  assert _steps(checkpoints) == [2, 4]
  assert len([n for n in os.listdir(checkpoints) if ".corrupt-" in n]) == 2


@pytest.mark.parametrize("keep", [0, -1, 2.5, True])
def test_keeping_no_checkpoints_is_refused(tmp_path, keep):
  # Orbax's max_to_keep=0 would delete every checkpoint right after saving.
  with pytest.raises(ValueError, match=f"keep_checkpoints={keep!r} must be"):
    checkpoint_lib.Checkpointer(str(tmp_path), keep=keep)


# ----------------------------------------------------------------------------
# NaN / Inf.


@pytest.mark.parametrize("bad_value", [float("nan"), float("inf"),
                                       float("-inf")], ids=str)
def test_non_finite_loss_stops_naming_the_step_and_saves_nothing_after(
    tmp_path, bad_value):
  with pytest.raises(trainer.NonFiniteLossError) as info:
    _train(tmp_path, _toy_task(8, bad_step=5, bad_value=bad_value))
  message = str(info.value)
  assert f"the loss is {bad_value} at step 5." in message
  assert "\n" not in message
  assert _steps(tmp_path / "checkpoints") == [2, 4]


def test_non_finite_loss_between_log_steps_names_the_first_bad_step(tmp_path):
  # Checked only at step 5 (the first log / checkpoint step): the bad state
  # of step 5 is not saved and the message names step 3.
  with pytest.raises(trainer.NonFiniteLossError, match="inf at step 3[.]"):
    _train(tmp_path, _toy_task(8, bad_step=3, bad_value=float("inf")),
           log_every=10, checkpoint_every=5)
  assert _steps(tmp_path / "checkpoints") == []


TINY_CONFIG = """
import importlib.util
spec = importlib.util.spec_from_file_location(
    "fashion_mnist", {config!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)


def get_config():
  config = module.get_config()
  config.stages = ("tokenizer",)
  config.image_size = 8
  config.tokenizer.preset = "tiny"
  config.data.max_examples = 64
  t = config.tokenizer_training
  t.batch_size = 8
  t.num_steps = 6
  t.log_every = 1
  t.checkpoint_every = 1
  t.image_every = 0
  t.tensorboard = False
  t.async_checkpoints = False
{extra}
  return config
"""


def _tiny_config_file(tmp_path, extra=""):
  path = tmp_path / "tiny_config.py"
  path.write_text(TINY_CONFIG.format(
      config=str(ROOT / "configs" / "fashion_mnist.py"), extra=extra))
  return path


def _train_cli(config, workdir, *args, timeout=300):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  # One device, as a user runs it (conftest's code generation level).
  env["XLA_FLAGS"] = conftest.SUBPROCESS_XLA_FLAGS
  return subprocess.run(
      [sys.executable, "-m", "maskgit_jax.train", f"--config={config}",
       f"--workdir={workdir}", *args],
      cwd=ROOT, capture_output=True, text=True, env=env, timeout=timeout)


def _assert_one_error_line(result, *needles):
  assert result.returncode != 0, result.stdout[-2000:]
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
  for needle in needles:
    assert needle in lines[0], (needle, lines[0])
  return lines[0]


def test_cli_non_finite_loss_is_one_error_line_naming_the_step(tmp_path):
  config = _tiny_config_file(tmp_path, extra=(
      "  t.g_optimizer.lr = 1e30\n  t.g_optimizer.warmup_steps = 0"))
  result = _train_cli(config, tmp_path / "run")
  line = _assert_one_error_line(result, "Training stage 'tokenizer' stopped")
  assert "Traceback" not in result.stdout + result.stderr
  step = int(line.split(" at step ")[1].split(".")[0])
  assert 1 <= step <= 6
  saved = _steps(tmp_path / "run" / "tokenizer" / "checkpoints")
  assert saved == list(range(1, step))[-3:]  # keep_checkpoints=3


# ----------------------------------------------------------------------------
# Bad configs and inputs on the command line.


def _garbage_image_folder(root):
  rng = np.random.RandomState(0)
  for name in ("shirt", "shoe"):
    os.makedirs(root / name)
    for i, ext in enumerate((".png", ".jpg", ".webp")):
      (root / name / f"{i}{ext}").write_bytes(rng.bytes(int(rng.randint(
          0, 2000))))


BAD_OVERRIDES = {
    "mesh_does_not_divide": (["--config.mesh=(3,1,1)"], ["config.mesh", "3"]),
    "negative_batch_size": (["--config.tokenizer_training.batch_size=-4"],
                            ["batch_size", "-4"]),
    "zero_steps": (["--config.tokenizer_training.num_steps=0"],
                   ["tokenizer_training.num_steps"]),
    "unknown_data_source": (["--config.data.source=imagenet_on_floppy"],
                            ["imagenet_on_floppy"]),
    "keep_no_checkpoints": (["--config.tokenizer_training.keep_checkpoints=0"],
                            ["keep_checkpoints=0"]),
    "min_mask_ratio_one": (["--config.transformer_training.min_mask_ratio=1.0"],
                           ["transformer_training.min_mask_ratio=1.0"]),
    "nan_sampling_temperature": (
        ["--config.sampling.sampling_temperature=nan"],
        ["sampling.sampling_temperature=nan"]),
    "zero_final_temperature": (
        ["--config.sampling.sampling_temperature_end=0"],
        ["sampling.sampling_temperature_end=0.0"]),
    "minus_inf_guidance": (["--config.sampling.guidance_scale=-inf"],
                           ["sampling.guidance_scale=-inf"]),
    "zero_samples_per_class": (
        ["--config.transformer_training.samples.per_class=0"],
        ["samples.per_class=0"]),
}


@pytest.mark.parametrize("case", sorted(BAD_OVERRIDES))
def test_cli_bad_config_value_is_one_error_line(tmp_path, case):
  args, needles = BAD_OVERRIDES[case]
  result = _train_cli("configs/fashion_mnist.py", tmp_path / "run", *args)
  _assert_one_error_line(result, *needles)


@pytest.mark.parametrize("override,needle", [
    ("tokenizer.encoder_spatial_levels=-1",
     "config.tokenizer.encoder_spatial_levels=-1"),
    # These four were tracebacks (from JAX, after config.json was written)
    # in the fuzz part of benchmarks/reliability.py.
    ("tokenizer.filters=-7", "config.tokenizer.filters=-7"),
    ("tokenizer.channel_multipliers=-1",
     "config.tokenizer.channel_multipliers=(-1,)"),
    ("logical_axis_rules=(0,1,1)", "config.logical_axis_rules entry 0"),
    ("stages=()", "config.stages=()"),
    # Found by the fuzz with seeds 1 and 2: a traceback when stage 2 started
    # (after stage 1 had trained), values accepted that make no sense (the
    # loss went non-finite with label smoothing 1e30), and a split error that
    # named neither key nor value, after config.json was written.
    ("transformer_training.log_every=1e400",
     "transformer_training.log_every=inf is not a finite duration"),
    ("transformer_training.label_smoothing=1e30",
     "transformer_training.label_smoothing=1e+30 must be a number in [0, 1]"),
    ("transformer_training.class_dropout=-0.5",
     "transformer_training.class_dropout=-0.5 must be a number in [0, 1]"),
    ("tokenizer_training.perceptual_weight=-inf",
     "tokenizer_training.perceptual_weight=-inf must be a finite number >= 0"),
    ("data.train_split=", "config.data.train_split='': Fashion-MNIST has"),
    ("tokenizer_training.discriminator.max_filters=-7",
     "tokenizer_training.discriminator.max_filters=-7 must be an int >= 1"),
])
def test_cli_bad_model_field_is_one_error_line_and_writes_no_run(
    tmp_path, override, needle):
  # Checked before config.json is written: the corrected command must not
  # meet a record of the rejected value.
  result = _train_cli("configs/fashion_mnist.py", tmp_path / "run",
                      f"--config.{override}")
  _assert_one_error_line(result, needle)
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("section,fields,message", [
    ("tokenizer", dict(num_groups=3),
     "config.tokenizer.num_groups=3 must divide every level's channels "
     "(filters x channel_multipliers: [16, 32, 64])."),
    ("tokenizer", dict(codebook_size=1),
     "config.tokenizer.codebook_size=1 must be an int >= 2."),
    ("tokenizer", dict(num_res_blocks=True),
     "config.tokenizer.num_res_blocks=True must be an int >= 0."),
    ("tokenizer", dict(code_dim=-2),
     "config.tokenizer.code_dim=-2 must be an int >= 0 or None (None or 0: "
     "no factorised code)."),
    ("tokenizer", dict(entropy_loss_ratio=float("inf")),
     "config.tokenizer.entropy_loss_ratio=inf must be a finite number >= 0."),
    ("tokenizer", dict(entropy_temperature=0.0),
     "config.tokenizer.entropy_temperature=0.0 must be a finite number > 0."),
    ("tokenizer", dict(activation="bogus"),
     "config.tokenizer.activation='bogus' must be one of 'swish', 'relu', "
     "'gelu'."),
    ("tokenizer", dict(entropy_loss_type="max"),
     "config.tokenizer.entropy_loss_type='max' must be one of 'softmax', "
     "'argmax'."),
    ("transformer", dict(hidden_size=130),
     "config.transformer.hidden_size=130 must be a multiple of "
     "num_attention_heads=4."),
    ("transformer", dict(num_hidden_layers=0),
     "config.transformer.num_hidden_layers=0 must be an int >= 1."),
    ("transformer", dict(hidden_dropout_prob=1.0),
     "config.transformer.hidden_dropout_prob=1.0 must be a number in "
     "[0, 1)."),
    ("transformer", dict(initializer_range=0.0),
     "config.transformer.initializer_range=0.0 must be a finite number > 0."),
])
def test_model_sizes_that_cannot_build_a_model_are_named(section, fields,
                                                         message):
  config = test_train.load_config("fashion_mnist")
  for key, value in fields.items():
    config[section][key] = value
  from maskgit_jax.nets import factory  # pylint: disable=import-outside-toplevel
  with pytest.raises(ValueError) as e:
    factory.transformer_from_config(config)
  assert str(e.value) == message


def test_cli_wrong_typed_override_is_one_error_line(tmp_path):
  result = _train_cli("configs/fashion_mnist.py", tmp_path / "run",
                      "--config.tokenizer_training.batch_size=abc")
  _assert_one_error_line(result, "tokenizer_training.batch_size", "abc")


def test_cli_folder_of_random_bytes_is_one_error_line(tmp_path):
  images = tmp_path / "images"
  _garbage_image_folder(images)
  config = _tiny_config_file(tmp_path, extra=(
      f"  config.data.source = 'folder'\n"
      f"  config.data.path = {str(images)!r}"))
  result = _train_cli(config, tmp_path / "run")
  _assert_one_error_line(result, str(images))
  assert "Traceback" not in result.stderr


# ----------------------------------------------------------------------------
# Hostile files: loading never runs code from them.


class _Evil:
  """Unpickling this runs `func(*args)`."""

  def __init__(self, func, *args):
    self.func, self.args = func, args

  def __reduce__(self):
    return self.func, self.args


def _torch_zip(path, pickle_bytes, extra=None):
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("archive/data.pkl", pickle_bytes)
    for name, data in (extra or {}).items():
      z.writestr(name, data)
  return path


def _touch_with_inst_opcode(marker):
  # Protocol 0: INST 'os system' with a MARK'ed argument.
  return b"(S'touch " + str(marker).encode() + b"'\nios\nsystem\n."


def _stack_global_eval(marker):
  # Protocol 4: STACK_GLOBAL builtins.eval, then REDUCE.
  code = f"open({str(marker)!r}, 'w')"
  return pickle.dumps(_Evil(eval, code), protocol=4)


def _functools_partial_gadget(marker):
  # A callable hidden in an allowed-looking container is still a global.
  return pickle.dumps(_Evil(functools.partial(os.system, f"touch {marker}")),
                      protocol=2)


def _payload_in_persistent_id(marker):
  # The persistent id of a storage carries the payload.
  class Pid:
    def __reduce__(self):
      return os.system, (f"touch {marker}",)
  pickler_out = io.BytesIO()

  class P(pickle.Pickler):
    def persistent_id(self, obj):
      return ("storage", Pid(), "0", "cpu", 1) if obj == "x" else None
  P(pickler_out, protocol=2).dump({"w": "x"})
  return pickler_out.getvalue()


def _disguised_as_torchscript(marker):
  # A `__torch__.*` global is a plain record stand-in: calling it with the
  # payload's arguments must not reach os.system.
  return (b"\x80\x02c__torch__.os\nsystem\nX" +
          len(f"touch {marker}").to_bytes(4, "little") +
          f"touch {marker}".encode() + b"\x85R.")


@pytest.mark.parametrize("make", [
    _touch_with_inst_opcode, _stack_global_eval, _functools_partial_gadget,
    _payload_in_persistent_id, _disguised_as_torchscript,
], ids=lambda f: f.__name__.strip("_"))
def test_torchscript_zip_with_code_is_refused_without_running_it(tmp_path,
                                                                 make):
  marker = tmp_path / "pwned"
  path = _torch_zip(tmp_path / "evil.pt", make(marker))
  with pytest.raises(torch_pickle.WeightsFileError) as info:
    torch_pickle.read_archive(path)
  message = str(info.value)
  assert str(path) in message and "\n" not in message
  assert not marker.exists()


def _tensor_pickle(size, stride):
  """data.pkl of one float tensor on a one-element storage."""
  pid = (b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000"
         b"X\x03\x00\x00\x00cpuK\x01tQ")
  tup = lambda t: pickle.dumps(tuple(t), protocol=2)[2:-1]  # noqa: E731
  return (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(" + pid + b"K\x00" +
          tup(size) + tup(stride) + b"\x89tR.")


def test_torchscript_tensor_larger_than_its_storage_is_a_clear_error(tmp_path):
  path = _torch_zip(tmp_path / "bomb.pt",
                    _tensor_pickle((2**24, 2**24), (0, 0)),
                    {"archive/data/0": np.float32(1).tobytes()})
  with pytest.raises(torch_pickle.WeightsFileError, match="bomb.pt"):
    torch_pickle.read_archive(path)


def test_torchscript_zip_with_unknown_compression_is_a_clear_error(tmp_path):
  path = _torch_zip(tmp_path / "odd.pt", pickle.dumps({"w": 1}, protocol=2))
  data = bytearray(path.read_bytes())
  # Compression method field of the local header and the central directory.
  for signature, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
    i = data.index(signature)
    data[i + offset:i + offset + 2] = (99).to_bytes(2, "little")
  path.write_bytes(bytes(data))
  with pytest.raises(torch_pickle.WeightsFileError, match="odd.pt"):
    torch_pickle.read_archive(path)


@pytest.fixture(scope="module")
def transformer_shapes():
  module = maskgit_transformer.Transformer.from_preset("tiny")
  shapes = released.model_shapes(module, jnp.zeros((1, 17), jnp.int32))
  return flax.traverse_util.flatten_dict(shapes["params"])


def _msgpack_file(path, flat_shapes, leaf):
  tree = {}
  for key, shape in flat_shapes.items():
    node = tree
    for k in key[:-1]:
      node = node.setdefault(k, {})
    node[key[-1]] = leaf(shape.shape)
  path.write_bytes(msgpack.packb({"params": tree}, use_bin_type=True))
  return path


def _ndarray_ext(shape, dtype_name, itemsize):
  data = b"\0" * (itemsize * int(np.prod(shape)))
  return msgpack.ExtType(1, msgpack.packb((list(shape), dtype_name, data),
                                          use_bin_type=True))


def _pickle_of_touch(marker):
  return pickle.dumps(_Evil(os.system, f"touch {marker}"))


MSGPACK_LEAVES = {
    "unknown_ext_type_with_pickle":
        lambda m: lambda s: msgpack.ExtType(42, _pickle_of_touch(m)),
    "object_dtype_array": lambda m: lambda s: _ndarray_ext(s, b"O", 8),
    "object_dtype_scalar": lambda m: lambda s: msgpack.ExtType(
        3, msgpack.packb(([], b"O", b"\0" * 8), use_bin_type=True)),
    "complex_ext_with_pickle": lambda m: lambda s: msgpack.ExtType(
        2, msgpack.packb((1.0, _pickle_of_touch(m)), use_bin_type=True)),
    "pickle_bytes_as_leaf": lambda m: lambda s: _pickle_of_touch(m),
    "python_code_as_leaf": lambda m: lambda s: (
        f"__import__('os').system('touch {m}')"),
}


@pytest.mark.parametrize("case", sorted(MSGPACK_LEAVES))
def test_released_format_file_with_odd_content_is_a_clear_error(
    tmp_path, transformer_shapes, case):
  marker = tmp_path / "pwned"
  path = _msgpack_file(tmp_path / "evil_checkpoint", transformer_shapes,
                       MSGPACK_LEAVES[case](marker))
  with pytest.raises(ValueError) as info:
    released.load_transformer(path, preset="tiny")
  assert str(path) in str(info.value) and "\n" not in str(info.value)
  assert not marker.exists()


def test_released_format_file_nested_too_deep_is_a_clear_error(tmp_path):
  path = tmp_path / "deep"
  path.write_bytes(b"\x91" * 100_000 + b"\xc0")  # [[[[...]]]]
  with pytest.raises(ValueError, match="deep: not a Flax msgpack"):
    released.read_msgpack(path)


@pytest.mark.parametrize("case", ["integer_keys", "void_dtype_arrays"])
def test_released_format_file_with_odd_types_names_the_file(
    tmp_path, transformer_shapes, case):
  path = tmp_path / "odd_checkpoint"
  if case == "integer_keys":
    path.write_bytes(msgpack.packb({"params": {1: {2: 3.0}}}))
  else:
    _msgpack_file(path, transformer_shapes,
                  lambda s: _ndarray_ext(s, b"V4", 4))
  with pytest.raises(ValueError, match="odd_checkpoint"):
    released.load_transformer(path, preset="tiny")


def _edit_json(path, edit):
  data = json.loads(path.read_text())
  edit(data)
  path.write_text(json.dumps(data))


def _code(marker):
  return f"__import__('os').system('touch {marker}')"


ORBAX_EDITS = {
    # Handler type names are looked up in orbax's registry, never imported.
    "item_handlers_name_os_system": ("_CHECKPOINT_METADATA", lambda m: (
        lambda d: d.update(item_handlers={"state": "os.system",
                                          "data": "subprocess.call"}))),
    "item_handlers_is_code": ("_CHECKPOINT_METADATA", lambda m: (
        lambda d: d.update(item_handlers=_code(m)))),
    "custom_metadata_reduce": ("_CHECKPOINT_METADATA", lambda m: (
        lambda d: d.update(custom_metadata={"__reduce__": [
            "os.system", [f"touch {m}"]]}))),
    "array_value_type_is_code": ("state/_METADATA", lambda m: (
        lambda d: [v["value_metadata"].update(value_type=_code(m))
                   for v in d["tree_metadata"].values()])),
    "tree_key_is_code": ("state/_METADATA", lambda m: (
        lambda d: d.update(tree_metadata={
            _code(m) + k: v for k, v in d["tree_metadata"].items()}))),
}


@pytest.mark.parametrize("case", sorted(ORBAX_EDITS))
def test_orbax_checkpoint_with_odd_metadata_runs_nothing(
    two_checkpoints, tmp_path, case):
  marker = tmp_path / "pwned"
  rel, make_edit = ORBAX_EDITS[case]
  path = tmp_path / "checkpoints"
  shutil.copytree(two_checkpoints, path)
  _edit_json(path / "4" / rel, make_edit(marker))
  # Read-only (evaluate, sample, export) and training resume: exact values
  # of step 4, or a fallback to step 2 with a warning; no code runs.
  params, info = checkpoint_lib.restore_params_with_info(str(path))
  assert info["step"] in (2, 4)
  if info["params"] == "ema":
    np.testing.assert_array_equal(
        params["params"]["w"], _state(info["step"])["ema_params"]["w"])
  ckpt = checkpoint_lib.Checkpointer(str(path), keep=3, async_save=False)
  step, state, _ = ckpt.restore_latest(jax.eval_shape(lambda: _state(0)))
  ckpt.close()
  _assert_trees_equal(state, _state(step))
  assert not marker.exists()


def test_orbax_data_item_with_odd_content_is_detected_and_runs_nothing(
    two_checkpoints, tmp_path):
  marker = tmp_path / "pwned"
  path = tmp_path / "checkpoints"
  shutil.copytree(two_checkpoints, path)
  payload = {"__reduce__": ["os.system", [f"touch {marker}"]],
             "py/object": "os.system"}
  _edit_json(path / "4" / "data" / "metadata",
             lambda d: d.update(value=payload))
  notes = []
  ckpt = checkpoint_lib.Checkpointer(str(path), keep=3, async_save=False)
  step, _, data_state = ckpt.restore_latest(
      jax.eval_shape(lambda: _state(0)), log=notes.append)
  ckpt.close()
  # The edited JSON no longer matches its CRC: step 4 is unreadable.
  assert step == 2 and data_state == {"next": 2}
  assert "data-iterator state or the saved fingerprints are damaged" in (
      notes[0])
  assert not marker.exists()


def test_the_slow_suite_runs_one_part_and_reports_it(tmp_path):
  # benchmarks/reliability.py and its part modules (reliability_*.py): the
  # in-process loaders part, a few mutated files of each kind.
  out = tmp_path / "report.json"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  result = subprocess.run(
      [sys.executable, str(ROOT / "benchmarks" / "reliability.py"),
       "--parts=loaders", "--loader_cases=3", f"--scratch={tmp_path / 's'}",
       f"--output={out}"], cwd=ROOT, env=env, capture_output=True,
      text=True, timeout=300)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
  report = json.loads(out.read_text())
  assert report["passed"] and list(report["parts"]) == ["loaders"]
  assert "| mutated files | pass |" in result.stdout


def test_fuzz_cases_do_not_reshuffle_when_a_config_key_is_added(
    monkeypatch):
  """Before, case i took `rng.choice(keys)` from one stream, so adding
  `tokenizer.decoder_attention` changed every seeded case."""
  monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
  import reliability_fuzz  # pylint: disable=import-outside-toplevel
  keys = [f"section{j % 7}.key{j}" for j in range(60)]
  more = sorted(keys + ["tokenizer.new_option"])
  for seed in (0, 1):
    before = [reliability_fuzz.case_key(seed, i, keys) for i in range(200)]
    after = [reliability_fuzz.case_key(seed, i, more) for i in range(200)]
    changed = [i for i in range(200) if before[i] != after[i]]
    assert all(after[i] == "tokenizer.new_option" for i in changed)
    assert len(changed) <= 12  # about 200 / 61
    assert len(set(before)) > 40  # the cases still spread over the keys
  a = reliability_fuzz.case_rng(0, 3, "k").random()
  assert a == reliability_fuzz.case_rng(0, 3, "k").random()
  assert a != reliability_fuzz.case_rng(0, 4, "k").random()


@pytest.mark.parametrize("key,value,message", [
    ("mask_scheduling_method", "",
     "sampling.mask_scheduling_method='': Unknown mask schedule ''"),
    ("mask_scheduling_method", "pow",
     "sampling.mask_scheduling_method='pow': Unknown mask schedule 'pow'"),
    ("guidance_schedule", "ramp",
     "sampling.guidance_schedule='ramp' must be one of 'constant', "
     "'linear', 'cosine'."),
])
def test_sampling_schedules_are_checked_before_training(key, value, message):
  """Before, both stages trained and the run failed at its final grid, with
  an error naming neither key."""
  config = test_train.tiny_config()
  config.sampling[key] = value
  with pytest.raises(ValueError) as e:
    config_checks.check_config(config)
  assert str(e.value).startswith(message)


def test_the_config_sweep_finds_no_other_exception(tmp_path):
  """benchmarks/reliability.py's sweep part: every key of the demo's and the
  folder config with every bad value of its type is refused with one line
  or accepted, before anything is written (about 2,000 overrides)."""
  out = tmp_path / "report.json"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  result = subprocess.run(
      [sys.executable, str(ROOT / "benchmarks" / "reliability.py"),
       "--parts=sweep", f"--scratch={tmp_path / 's'}", f"--output={out}"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
  sweep = json.loads(out.read_text())["parts"]["sweep"]
  assert sweep["failures"] == [] and sweep["overrides"] > 1800
  # Values refused since the sweep first ran (2026-12-07).
  for value in ("tokenizer_training.ema_decay=-1.0",
                "tokenizer_training.gan_loss=bogus",
                "sampling.mask_scheduling_method=bogus",
                "sampling.refine_steps=1000000000000000",
                "num_classes=0"):
    for name in ("fashion_mnist", "folder"):
      assert f"{name}: {value}" not in sweep["accepted"]
  assert "fashion_mnist: seed=-1" in sweep["accepted"]  # valid if odd
  assert not list((tmp_path / "s" / "sweep").glob("*/config.json"))
