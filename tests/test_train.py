"""Training both stages: end to end, sharding, resume, NaN, config errors."""
import importlib.util
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from maskgit_jax.nets import layer_stack
from maskgit_jax.store import export
from maskgit_jax.store import loader
from maskgit_jax.store import released
from maskgit_jax.train_lib import run
from maskgit_jax.train_lib import trainer

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_config(name="fashion_mnist"):
  spec = importlib.util.spec_from_file_location(
      name, ROOT / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def tiny_config(stages=("tokenizer", "transformer"), steps=4):
  config = load_config()
  config.stages = stages
  config.image_size = 8
  config.num_classes = 10
  config.tokenizer.preset = "tiny"
  # The release's encoder (3x3 kernels at every level), as the tests were
  # written for (the demo's has 1x1 kernels at 7x7).
  config.tokenizer.encoder_spatial_levels = None
  # Adam in stage 1, as the tests were written for (the demo's is Muon;
  # tests/test_optim.py trains with it).
  config.tokenizer_training.g_optimizer.name = "adam"
  config.transformer.preset = "tiny"
  # The preset's float32 (the demo trains stage 2 in bfloat16): the tests
  # that want bfloat16 set it.
  config.transformer.dtype = None
  config.data.max_examples = 256
  for section in (config.tokenizer_training, config.transformer_training):
    section.num_steps = steps
    section.batch_size = 8
    section.log_every = 1
    section.checkpoint_every = 2
    section.image_every = 0
    section.async_checkpoints = False
    section.tensorboard = False
  config.transformer_training.optimizer.warmup_steps = 1
  config.tokenizer_training.g_optimizer.warmup_steps = 1
  # The demo's decoder-only GAN phase off: the tests that want a GAN set
  # its weight, from step 0, with the release's R1 and discriminator.
  t = config.tokenizer_training
  t.decoder_finetune_steps, t.disc_start_step = 0, 0
  t.generator_adversarial_weight, t.r1_cost = 0.0, 10.0
  t.d_optimizer.b1 = 0.0
  t.discriminator.max_filters = 512
  t.discriminator.conv_as_matmul = None
  config.sampling.samples_per_class = 1
  config.sampling.num_iter = 2
  config.sampling.grid_scale = 1
  return config


def leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_both_stages_end_to_end(tmp_path):
  """With the GAN recipe, rematerialised tokenizer blocks and scanned,
  rematerialised transformer layers (exported in the release's layout)."""
  config = tiny_config()
  config.tokenizer.remat = "minimal"
  config.transformer.scan_layers = True
  config.transformer.remat = "full"
  config.tokenizer_training.generator_adversarial_weight = 0.1
  config.tokenizer_training.discriminator.max_filters = 8
  config.tokenizer_training.lecam_weight = 0.01
  config.tokenizer_training.image_every = 4
  config.transformer_training.image_every = 4
  out = run.train_and_evaluate(config, str(tmp_path))
  assert (tmp_path / "samples.png").exists()
  assert (tmp_path / "config.json").exists()
  for stage in ("tokenizer", "transformer"):
    assert sorted(os.listdir(tmp_path / stage / "checkpoints")) == ["2", "4"]
    lines = (tmp_path / stage / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4
  assert any(p.name.startswith("tokenizer_reconstructions")
             for p in (tmp_path / "tokenizer" / "images").iterdir())
  assert any(p.name.startswith("transformer_samples")
             for p in (tmp_path / "transformer" / "images").iterdir())
  assert set(out) == {"tokenizer", "transformer", "samples"}
  import json  # pylint: disable=import-outside-toplevel
  record = json.loads(lines[-1])
  assert {"loss", "masked_accuracy", "learning_rate", "grad_norm",
          "steps_per_sec"} <= set(record)
  tok = json.loads((tmp_path / "tokenizer" / "metrics.jsonl").read_text()
                   .splitlines()[-1])
  assert {"discriminator_loss", "r1_penalty", "codebook_usage",
          "reconstruction_loss", "lecam_loss"} <= set(tok)
  # Running again finds both stages complete and only rewrites the grid.
  again = run.train_and_evaluate(config, str(tmp_path))
  jax.tree.map(np.testing.assert_array_equal, out["transformer"],
               again["transformer"])
  assert layer_stack.is_scanned(out["transformer"]["params"])
  # Exported in the release's layout; either layout loads it.
  export.export(str(tmp_path), str(tmp_path / "out"))
  # Never into a training run (its own folder included): the files would
  # shadow its checkpoints, and its config.json would be replaced.
  before = sorted(os.listdir(tmp_path))
  with pytest.raises(ValueError, match=r"--output=.* is a training run \(it "
                     r"has .*tokenizer/checkpoints\)"):
    export.export(str(tmp_path / "out"), str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == before
  # Under a file: one line before anything is read (was a traceback).
  with pytest.raises(ValueError, match=r"Cannot write .*config.json/x/"
                     r"config.json: .*config.json is a file, not a folder"):
    export.export(str(tmp_path), str(tmp_path / "config.json" / "x"))
  export.export(str(tmp_path), str(tmp_path / "out"))  # Again: allowed.
  params = released.read_msgpack(tmp_path / "out" / "transformer.msgpack")
  params = params.get("params", params)
  assert "TransformerLayer_0" in params and layer_stack.STACK not in params
  for scan in (False, True):
    config.transformer.scan_layers = scan
    for where in (tmp_path / "out", tmp_path):
      models = loader.load_models(config, workdir=str(where),
                                  stages=("transformer",),
                                  required=("transformer",))
      assert layer_stack.is_scanned(
          models.transformer_variables["params"]) == scan, (where, scan)


def _train_with_mesh(tmp_path, mesh, name, devices=None):
  config = tiny_config(stages=("transformer",), steps=3)
  config.mesh = mesh
  config.transformer_training.batch_size = 16
  config.transformer.hidden_dropout_prob = 0.0
  config.transformer.attention_probs_dropout_prob = 0.0
  tok = tmp_path / "tok"
  if not tok.exists():
    tok_config = tiny_config(stages=("tokenizer",), steps=2)
    run.train_and_evaluate(tok_config, str(tok))
  workdir = tmp_path / name
  shutil.copytree(tok / "tokenizer", workdir / "tokenizer")
  return run.train_and_evaluate(config, str(workdir),
                                devices=devices)["transformer"]


def test_data_parallel_and_fsdp_equal_one_device(tmp_path):
  assert jax.device_count() == 8
  one = _train_with_mesh(tmp_path, (1, 1, 1), "one", jax.devices()[:1])
  dp = _train_with_mesh(tmp_path, (8, 1, 1), "dp")
  fsdp = _train_with_mesh(tmp_path, (2, 4, 1), "fsdp")
  tp = _train_with_mesh(tmp_path, (4, 1, 2), "tp")
  for other in (dp, fsdp, tp):
    for a, b in zip(leaves(one), leaves(other)):
      np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


def test_resume_equals_uninterrupted(tmp_path):
  config = tiny_config(stages=("tokenizer",), steps=4)
  # Asynchronous saves while the next steps reuse (donate) the state's
  # buffers: the step-2 checkpoint must still hold step 2.
  config.tokenizer_training.async_checkpoints = True
  full = run.train_and_evaluate(config, str(tmp_path / "full"))["tokenizer"]
  # Interrupted copy: keep only the checkpoint at step 2, then rerun.
  shutil.copytree(tmp_path / "full", tmp_path / "resumed")
  shutil.rmtree(tmp_path / "resumed" / "tokenizer" / "checkpoints" / "4")
  resumed = run.train_and_evaluate(config, str(tmp_path / "resumed"))
  for a, b in zip(leaves(full), leaves(resumed["tokenizer"])):
    np.testing.assert_array_equal(a, b)


def test_nan_loss_stops_naming_the_step(tmp_path):
  config = tiny_config(stages=("tokenizer",), steps=6)
  config.tokenizer_training.checkpoint_every = 1
  config.tokenizer_training.g_optimizer.lr = 1e30
  config.tokenizer_training.g_optimizer.warmup_steps = 0
  with pytest.raises(trainer.NonFiniteLossError, match=r"at step (\d+)") as e:
    run.train_and_evaluate(config, str(tmp_path))
  bad_step = int(str(e.value).split("at step ")[1].split(".")[0])
  saved = sorted(int(s) for s in os.listdir(tmp_path / "tokenizer" /
                                            "checkpoints"))
  assert saved == list(range(1, bad_step)), (saved, bad_step)


def test_misspelled_config_key_is_rejected(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "maskgit_jax.train",
       "--config=configs/fashion_mnist.py", f"--workdir={tmp_path}",
       "--config.transformer_training.optimizer.lrr=1"],
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode != 0
  assert result.stderr.strip().splitlines() == [
      "error: unknown config key 'transformer_training.optimizer.lrr' in "
      "configs/fashion_mnist.py (no 'lrr' at transformer_training.optimizer; "
      "known there: b1, b2, grad_clip_norm, lr, lr_end_factor, lr_schedule, "
      "name, warmup_steps, weight_decay)"]
  assert not os.listdir(tmp_path)


@pytest.mark.parametrize("name", ["fashion_mnist", "imagenet", "imagenet512",
                                  "imagenet_vqgan"])
def test_configs_load_and_build(name):
  from maskgit_jax.nets import factory  # pylint: disable=import-outside-toplevel
  config = load_config(name)
  factory.tokenizer_from_config(config)
  factory.transformer_from_config(config)
  assert set(config.stages) <= {"tokenizer", "transformer"}


def test_sigterm_saves_and_the_rerun_finishes(tmp_path):
  script = tmp_path / "job.py"
  script.write_text(f"""
import sys
sys.path.insert(0, {str(ROOT / 'tests')!r})
import test_train
from maskgit_jax.train_lib import run, trainer
config = test_train.tiny_config(stages=("tokenizer",), steps=400)
config.tokenizer_training.checkpoint_every = 1000
try:
  run.train_and_evaluate(config, {str(tmp_path / 'run')!r})
  print("FINISHED")
except trainer.Preempted as e:
  print("PREEMPTED", e)
""")
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  proc = subprocess.Popen([sys.executable, str(script)], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
  metrics = tmp_path / "run" / "tokenizer" / "metrics.jsonl"
  deadline = time.time() + 120
  while time.time() < deadline and not (
      metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
    time.sleep(0.2)
  proc.send_signal(signal.SIGTERM)
  output, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0, output[-2000:]
  assert "PREEMPTED preempted at step" in output, output[-2000:]
  step = int(output.split("PREEMPTED preempted at step ")[1].split()[0])
  assert 3 <= step < 400
  assert os.listdir(tmp_path / "run" / "tokenizer" / "checkpoints") == [
      str(step)]
