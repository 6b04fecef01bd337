"""configs/folder.py: classes, names, channels and sizes derived from a folder.

The colour folder is tests/data/folder_colour (30 Twemoji PNGs, 16x16 RGBA,
3 classes; CC-BY 4.0, see its README.md); grey and flat folders are made
here.
"""
import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest
import test_train

from maskgit_jax.nets import factory
from maskgit_jax.generation import sample_lib
from maskgit_jax.common import grids
from maskgit_jax.data import folder_info
from maskgit_jax.train_lib import auto_config
from maskgit_jax.train_lib import run
import conftest  # tests/conftest.py

ROOT = pathlib.Path(__file__).resolve().parents[1]
COLOUR = ROOT / "tests" / "data" / "folder_colour"
COLOUR_CLASSES = ("animals_nature", "food_drink", "travel_places")


def folder_config(path, image_size=32):
  config = test_train.load_config("folder")
  config.data.path = str(path)
  config.image_size = image_size
  return config


def make_grey_tree(root):
  """Two classes of grey images in several grey modes (L, LA, 16-bit, a grey
  palette, a grey JPEG)."""
  rng = np.random.default_rng(0)
  pixels = lambda: rng.integers(0, 256, (12, 12), np.uint8)  # noqa: E731
  images = {
      "cats/a.png": Image.fromarray(pixels()),
      "cats/b.png": Image.fromarray(pixels()).convert("LA"),
      "cats/c.jpg": Image.fromarray(pixels()),
      "dogs/d.png": Image.fromarray(pixels().astype(np.uint16) * 200),
      "dogs/e.png": Image.fromarray(pixels()).convert("P"),
  }
  for rel, img in images.items():
    os.makedirs(root / rel.split("/")[0], exist_ok=True)
    img.save(root / rel)
  assert Image.open(root / "dogs/e.png").mode == "P"
  return root


def test_colour_tree_classes_names_channels_and_sizes(tmp_path):
  config = folder_config(COLOUR, image_size=32)
  notes = []
  resolved = auto_config.resolve(config, str(tmp_path), log=notes.append)
  assert resolved.num_classes == 3
  assert tuple(resolved.class_names) == COLOUR_CLASSES
  assert resolved.tokenizer.channels == 3
  for key, value in auto_config.TOKENIZER_SIZES[32].items():
    assert resolved.tokenizer[key] == value, key
  assert "3 classes (animals_nature, food_drink, travel_places)" in notes[0]
  assert "colour images (3 channels; e.g. animals_nature/" in notes[0]
  assert "(8x8 tokens)" in notes[1]
  # The given config is untouched (its auto fields stay None).
  assert config.num_classes is None and config.tokenizer.channels is None
  info = folder_info.inspect_folder(str(COLOUR))
  assert info.num_images == 30 and info.conditional
  assert info.colour_example.endswith(" is RGBA")


def test_grey_tree_is_one_channel_and_cached(tmp_path):
  root = make_grey_tree(tmp_path / "grey")
  resolved = auto_config.resolve(folder_config(root), str(tmp_path / "run"))
  assert resolved.tokenizer.channels == 1
  assert resolved.num_classes == 2 and tuple(resolved.class_names) == (
      "cats", "dogs")
  cache = str(tmp_path / "run" / "data_index")
  again = folder_info.inspect_folder(str(root), cache_dir=cache)
  assert again.channels == 1 and again.channels_from_cache
  # One colour image (a colour palette) makes the folder colour.
  Image.fromarray(np.random.default_rng(1).integers(
      0, 256, (8, 8, 3), np.uint8)).convert("P").save(root / "dogs" / "f.png")
  changed = folder_info.inspect_folder(str(root), cache_dir=cache)
  assert changed.channels == 3 and not changed.channels_from_cache
  assert changed.colour_example == "dogs/f.png is P"


def test_flat_folder_is_unconditional(tmp_path):
  flat = tmp_path / "emoji"
  flat.mkdir()
  for png in sorted(COLOUR.glob("food_drink/*.png"))[:4]:
    shutil.copy(png, flat / png.name)
  resolved = auto_config.resolve(folder_config(flat), None)
  assert resolved.num_classes == 1 and tuple(resolved.class_names) == (
      "emoji",)
  assert resolved.tokenizer.channels == 3
  with pytest.raises(ValueError, match=r"num_classes=3 but the image folder "
                     r".*emoji has no class sub-folders \(unconditional: 1"):
    config = folder_config(flat)
    config.num_classes = 3
    auto_config.resolve(config, None)


@pytest.mark.parametrize("field,value,needles", [
    ("num_classes", 10, ["config.num_classes=10", "3 classes",
                         "set num_classes=3"]),
    ("tokenizer.channels", 1, ["config.tokenizer.channels=1",
                               "colour images (3 channels"]),
    ("class_names", ("a", "b"), ["config.class_names has 2 names (a, b)",
                                 "3 classes"]),
])
def test_explicit_values_contradicting_the_folder(tmp_path, field, value,
                                                  needles):
  config = folder_config(COLOUR)
  parent, key = (["tokenizer"] + field.split(".")[1:] if "." in field
                 else [None, field])
  (config[parent] if parent else config)[key] = value
  with pytest.raises(ValueError) as e:
    auto_config.resolve(config, str(tmp_path / "new"))
  assert not (tmp_path / "new").exists()  # made for the index, removed
  message = str(e.value)
  assert "\n" not in message and str(COLOUR) in message
  for needle in needles:
    assert needle in message, (needle, message)


def test_agreeing_explicit_values_are_kept_and_grey_as_rgb_allowed(tmp_path):
  config = folder_config(make_grey_tree(tmp_path / "grey"))
  config.num_classes = 2
  config.class_names = ("Cat", "Dog")  # display names of the same count
  config.tokenizer.channels = 3
  notes = []
  resolved = auto_config.resolve(config, None, log=notes.append)
  assert tuple(resolved.class_names) == ("Cat", "Dog")
  assert resolved.tokenizer.channels == 3
  assert any("only grey images" in n for n in notes)


def test_preset_supplies_sizes_and_other_configs_are_unchanged():
  config = folder_config(COLOUR)
  config.tokenizer.preset = "small"
  resolved = auto_config.resolve(config, None)
  assert "filters" not in resolved.tokenizer
  assert factory.tokenizer_from_config(resolved).filters == 16
  fashion = test_train.load_config("fashion_mnist")
  assert auto_config.resolve(fashion, None) is fashion
  with pytest.raises(ValueError, match="no automatic tokenizer size"):
    auto_config.resolve(folder_config(COLOUR, image_size=48), None)


def test_resuming_with_a_changed_folder_is_refused(tmp_path):
  workdir = tmp_path / "run"
  (workdir / "tokenizer" / "checkpoints" / "500").mkdir(parents=True)
  (workdir / "config.json").write_text(json.dumps(
      {"num_classes": 2, "class_names": ["a", "b"],
       "tokenizer": {"channels": 3}}))
  with pytest.raises(ValueError, match=r"checkpoints trained with "
                     r"num_classes=2 .* the data now gives num_classes=3"):
    auto_config.resolve(folder_config(COLOUR), str(workdir))


def _train_cli(workdir, *args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env["XLA_FLAGS"] = conftest.SUBPROCESS_XLA_FLAGS  # one device
  return subprocess.run(
      [sys.executable, "-m", "maskgit_jax.train", "--config=configs/folder.py",
       f"--workdir={workdir}", *args],
      cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)


def _one_error_line(result):
  assert result.returncode != 0, result.stdout[-2000:]
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
  return lines[0]


def test_a_refused_folder_resume_offers_the_overrides(tmp_path):
  """A folder run recorded before the noisy-token decoder phase, resumed
  with today's configs/folder.py through the CLI: the one error line offers
  the `=None` overrides (the types come from the command line's config, not
  the resolved one, which has lost them), nothing is written, and those
  overrides give back the recorded config."""
  from maskgit_jax.train_lib import config_record  # pylint: disable=import-outside-toplevel
  import test_config_fields  # pylint: disable=import-outside-toplevel
  workdir = tmp_path / "run"
  old = folder_config(COLOUR)
  old.time_budget_s = None  # recorded before the budget
  t = old.tokenizer_training
  t.num_steps, t.decoder_finetune_steps = 4000, None
  t.decoder_token_noise = t.decoder_token_noise_neighbours = None
  config_record.record(auto_config.resolve(old, str(workdir)), str(workdir),
                       log=lambda _: None)
  recorded = (workdir / "config.json").read_text()
  line = _one_error_line(_train_cli(workdir, f"--config.data.path={COLOUR}"))
  flags = line.split("resume it as it was trained with ")[1][:-1].split()
  assert flags == [f"--config.tokenizer_training.{k}=None" for k in (
      "decoder_finetune_steps", "decoder_token_noise",
      "decoder_token_noise_neighbours")], line
  assert (workdir / "config.json").read_text() == recorded
  given = test_config_fields.parse(
      "folder", f"--config.data.path={COLOUR}",
      "--config.tokenizer_training.num_steps=4000", *flags)
  config_record.record(auto_config.resolve(given, str(workdir)), str(workdir),
                       log=lambda _: None, flag_types=given)  # resumes


def test_a_folder_run_with_preset_dropout_resumes_by_the_flags_offered(
    tmp_path):
  """A folder run recorded before stage 2 lost its dropout and moved to
  bfloat16 (those fields None there: the small preset's 0.1 and float32),
  resumed with today's configs/folder.py through the CLI: the one error
  line names the values they stood for and offers them as overrides,
  nothing is written, and the overrides resume the run (the precision, a
  free key, is recorded as changed)."""
  from maskgit_jax.train_lib import config_record  # pylint: disable=import-outside-toplevel
  import test_config_fields  # pylint: disable=import-outside-toplevel
  workdir = tmp_path / "run"
  old = folder_config(COLOUR)
  for key in ("hidden_dropout_prob", "attention_probs_dropout_prob", "dtype"):
    old.transformer[key] = None
  config_record.record(auto_config.resolve(old, str(workdir)), str(workdir),
                       log=lambda _: None)
  recorded = (workdir / "config.json").read_text()
  line = _one_error_line(_train_cli(workdir, f"--config.data.path={COLOUR}"))
  assert "transformer.hidden_dropout_prob: 0.1 -> 0.0" in line, line
  flags = line.split("resume it as it was trained with ")[1][:-1].split()
  assert flags == ["--config.transformer.attention_probs_dropout_prob=0.1",
                   "--config.transformer.hidden_dropout_prob=0.1"], line
  assert (workdir / "config.json").read_text() == recorded
  assert not (workdir / config_record.CHANGES_FILE).exists()
  given = test_config_fields.parse(
      "folder", f"--config.data.path={COLOUR}", *flags)
  config_record.record(auto_config.resolve(given, str(workdir)), str(workdir),
                       log=lambda _: None, flag_types=given)  # resumes
  changes = (workdir / config_record.CHANGES_FILE).read_text().splitlines()
  assert [list(json.loads(c)["changes"]) for c in changes] == [
      ["transformer.dtype"]]
  assert json.loads((workdir / "config.json").read_text())["transformer"][
      "dtype"] == "auto"


def test_cli_contradiction_is_one_line_and_leaves_the_run_alone(tmp_path):
  workdir = tmp_path / "run"
  (workdir / "tokenizer" / "checkpoints").mkdir(parents=True)
  (workdir / "config.json").write_text("the existing run's config\n")
  before = sorted(os.listdir(workdir))
  line = _one_error_line(_train_cli(
      workdir, f"--config.data.path={COLOUR}", "--config.num_classes=10"))
  assert "config.num_classes=10" in line and "has 3 classes" in line
  assert (workdir / "config.json").read_text() == "the existing run's config\n"
  assert sorted(set(os.listdir(workdir)) - {"data_index"}) == before
  assert not os.listdir(workdir / "tokenizer" / "checkpoints")

  line = _one_error_line(_train_cli(tmp_path / "new"))
  assert "config.data.path is not set" in line
  assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("image_size", [32, 64])
def test_model_sizes_build_and_run(image_size):
  config = auto_config.resolve(folder_config(COLOUR, image_size), None)
  tokenizer = factory.tokenizer_from_config(config)
  transformer = factory.transformer_from_config(config)
  assert tokenizer.channels == 3 and tokenizer.downsample_factor == (
      image_size // 8)
  # Local tokens (README "Train on your own images"): 3x3 kernels only at
  # full resolution.
  assert tokenizer.encoder_spatial_levels == 1
  tok_vars = factory.init_tokenizer(tokenizer, jax.random.PRNGKey(0),
                                   image_size)
  images = jnp.full((2, image_size, image_size, 3), 0.5)
  # Jitted: op by op, each operation would compile as a program of its own.
  ids = jax.jit(lambda v, x: tokenizer.apply(
      v, x, method=tokenizer.encode_to_indices))(tok_vars, images)
  assert ids.shape == (2, 8, 8)
  out = jax.jit(lambda v, i: tokenizer.apply(
      v, i, method=tokenizer.decode_from_indices))(tok_vars, ids)
  assert out.shape == (2, image_size, image_size, 3)
  assert np.isfinite(np.asarray(out)).all()
  tr_vars = factory.init_transformer(transformer, jax.random.PRNGKey(1))
  tokens = jnp.concatenate([jnp.full((2, 1), 512 + 2),
                            ids.reshape(2, -1)], axis=1)
  logits = jax.jit(transformer.apply)(tr_vars, tokens)
  assert logits.shape == (2, 65, 512 + 3 + 1)


def tiny_folder_config(path):
  """configs/folder.py with test sizes: 16x16 images, tiny models, 1 step."""
  config = folder_config(path, image_size=16)
  config.time_budget_s = None  # the steps below, not a budget's
  t = config.tokenizer
  t.filters, t.channel_multipliers, t.num_res_blocks = 8, (1, 2), 1
  t.embedding_dim, t.codebook_size, t.num_groups = 8, 16, 4
  t.code_dim, t.l2_normalized = 0, False
  config.transformer.preset = "tiny"
  config.mesh = (1, 1, 1)
  for section in (config.tokenizer_training, config.transformer_training):
    section.num_steps = 1
    section.batch_size = 8
    section.log_every = 1
    section.checkpoint_every = 1
    section.image_every = 0
    section.async_checkpoints = False
    section.tensorboard = False
  config.transformer_training.image_every = 1
  config.transformer_training.samples.per_class = 1
  config.transformer_training.samples.num_iter = 2
  config.transformer_training.optimizer.warmup_steps = 1
  config.tokenizer_training.g_optimizer.warmup_steps = 1
  config.sampling.samples_per_class = 1
  config.sampling.num_iter = 2
  config.sampling.grid_scale = 1
  return config


def test_one_step_end_to_end_on_the_colour_folder(tmp_path, monkeypatch):
  written_grids = []
  save_grid = grids.save_grid

  def recording_save_grid(images, path, row_labels=None, **kwargs):
    written_grids.append((os.path.basename(path), tuple(row_labels or ())))
    return save_grid(images, path, row_labels=row_labels, **kwargs)

  monkeypatch.setattr(grids, "save_grid", recording_save_grid)
  workdir = tmp_path / "run"
  run.train_and_evaluate(tiny_folder_config(COLOUR), str(workdir),
                         devices=jax.devices()[:1])
  labels = tuple(f"{i} {name}" for i, name in enumerate(COLOUR_CLASSES))
  # Stage 2's periodic samples (images/transformer_samples_<step>.png) and
  # the final grid (written via a temporary file renamed to samples.png).
  periodic = [rows for name, rows in written_grids
              if name.startswith("transformer_samples")]
  final = [rows for name, rows in written_grids if name.startswith(".tmp-")]
  assert periodic == [labels] and final == [labels], written_grids
  with Image.open(workdir / "samples.png") as grid:
    assert grid.mode == "RGB" and grid.size[1] > 3 * 16
  written = json.loads((workdir / "config.json").read_text())
  assert written["num_classes"] == 3
  assert written["class_names"] == list(COLOUR_CLASSES)
  assert written["tokenizer"]["channels"] == 3
  assert written["tokenizer"]["filters"] == 8
  assert written["data"]["path"] == str(COLOUR)
  # sample/evaluate read the resolved values back from the run.
  loaded = sample_lib.load_workdir(str(workdir))
  assert loaded.sampler.num_classes == 3
  assert sample_lib.class_label(loaded.config, 1) == "1 food_drink"


def test_a_stage_two_batch_larger_than_the_folder_stops_before_stage_one(
    tmp_path):
  config = tiny_folder_config(COLOUR)  # 30 images
  config.transformer_training.batch_size = 32
  workdir = tmp_path / "run"
  with pytest.raises(ValueError, match=(
      r"^The training data has 30 records, fewer than the global batch size "
      r"32\. Use a smaller transformer_training\.batch_size "
      r"\(--config\.transformer_training\.batch_size=N\) or more data\.$")):
    run.train_and_evaluate(config, str(workdir), devices=jax.devices()[:1])
  assert not (workdir / "tokenizer").exists()  # stage 1 never started
  assert not (workdir / "config.json").exists()
