"""`python -m maskgit_jax.sample` end to end, and its errors."""
import importlib.util
import os
import pathlib
import subprocess
import sys

import flax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from maskgit_jax import cli
from maskgit_jax.generation import sample_lib
from maskgit_jax.nets import maskgit_transformer
from maskgit_jax.nets import vqgan_tokenizer
import release_params

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ["--config.image_size=8", "--config.num_classes=3",
        "--config.tokenizer.preset=tiny", "--config.tokenizer.channels=3",
        # The release's encoder, as the released-format files' model.
        "--config.tokenizer.encoder_spatial_levels=None",
        "--config.transformer.preset=tiny", "--config.class_names=()",
        "--num_iter=3"]


def run(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run(
      [sys.executable, "-m", "maskgit_jax.sample",
       "--config=configs/fashion_mnist.py", *args],
      cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)


def test_cli_from_released_format_files(tmp_path):
  tok = vqgan_tokenizer.VQVAE.from_preset("tiny")
  tr = maskgit_transformer.Transformer.from_preset("tiny")
  tok_vars = release_params.fill(release_params.shapes_of(
      tok, jnp.zeros((1, 8, 8, 3)),
      method=lambda m, x: m.decode_from_indices(m.encode_to_indices(x))), 0)
  tr_vars = release_params.fill(release_params.shapes_of(
      tr, jnp.zeros((1, 17), jnp.int32)), 1)
  (tmp_path / "tok").write_bytes(flax.serialization.to_bytes(tok_vars))
  (tmp_path / "tr").write_bytes(flax.serialization.to_bytes(tr_vars))
  out = tmp_path / "grid.png"
  result = run(*TINY, f"--tokenizer_checkpoint={tmp_path / 'tok'}",
               f"--transformer_checkpoint={tmp_path / 'tr'}", "--classes=0,2",
               "--samples_per_class=3", f"--output={out}",
               f"--tokens_output={tmp_path / 'tokens.npy'}", "--batch_size=4")
  assert result.returncode == 0, result.stderr[-2000:]
  image = Image.open(out)
  assert image.height == 2 + 2 * (8 + 2)  # two rows of 8-pixel images
  tokens = np.load(tmp_path / "tokens.npy")
  assert tokens.shape == (2, 3, 4, 4) and tokens.min() >= 0 and tokens.max() < 16


def test_cli_errors_are_one_line_and_write_nothing(tmp_path):
  out = tmp_path / "grid.png"
  out.write_bytes(b"previous result")
  result = run(*TINY, "--random_init", "--classes=7", f"--output={out}")
  assert result.returncode != 0
  assert result.stderr.strip().splitlines()[-1] == (
      "error: Class id 7 is out of range [0, 3).")
  assert out.read_bytes() == b"previous result"
  result = run(*TINY, f"--tokenizer_checkpoint={tmp_path}/missing",
               f"--transformer_checkpoint={tmp_path}/missing2",
               f"--output={out}")
  assert "error: Checkpoint file not found" in result.stderr
  assert "Traceback" not in result.stderr
  result = run(*TINY, "--random_init", "--config.tokenizer.filterz=3")
  assert result.returncode != 0
  assert result.stderr.strip().splitlines() == [
      "error: unknown config key 'tokenizer.filterz' in configs/fashion_mnist.py"
      " (no 'filterz' at tokenizer; known there: channel_multipliers, channels,"
      " code_dim, codebook_size, commitment_cost, decoder_attention,"
      " embedding_dim,"
      " encoder_spatial_levels, entropy_loss_ratio, filters, group_norm,"
      " l2_normalized, num_groups, num_res_blocks, preset, quantizer_gradient,"
      " remat)"]


def load_config(name):
  spec = importlib.util.spec_from_file_location(
      name, ROOT / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def test_library_grid_shapes():
  config = load_config("fashion_mnist")
  config.tokenizer.preset = "tiny"
  config.transformer.preset = "tiny"
  config.image_size = 8
  sampler = sample_lib.build_sampler(config, random_init=True)
  assert sampler.tokenizer.channels == 1
  images, tokens = sample_lib.sample_classes(
      sampler, [0, 9], 3, jnp.zeros((2,), jnp.uint32), batch_size=4,
      progress=False, num_iter=3)
  assert images.shape == (2, 3, 8, 8, 1) and tokens.shape == (2, 3, 4, 4)


@pytest.mark.parametrize("name,text,expected", [
    ("missing.py", None, "error: config file not found: {path}"),
    ("config.json", '{"seed": null}',
     "error: --config={path}: a config is a Python file with get_config(), "
     "such as configs/fashion_mnist.py (a run's config.json is read from its "
     "folder: pass --workdir=RUN and no --config)"),
    ("broken.py", "def get_config(:\n", "error: config file {path} (line 1): "),
    ("raises.py", "def get_config():\n  return 1 / 0\n",
     "error: config file {path}: ZeroDivisionError: division by zero"),
    ("empty.py", "", "error: {path} has no get_config() function"),
])
def test_bad_config_file_is_one_line(tmp_path, name, text, expected):
  # Every entry point checks --config before absl runs the file (which
  # otherwise ends in a traceback: a run's config.json gave NameError 'null').
  path = tmp_path / name
  if text is not None:
    path.write_text(text)
  with pytest.raises(SystemExit) as e:
    cli.check_config_overrides([f"--config={path}", "--workdir=x"])
  assert str(e.value).startswith(expected.format(path=path))
  assert "\n" not in str(e.value)
