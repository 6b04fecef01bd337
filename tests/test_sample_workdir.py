"""`python -m maskgit_jax.sample` on a tiny trained run: every mode, errors."""
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
from PIL import Image
import pytest

from maskgit_jax.generation import edit_lib
from maskgit_jax.store import checkpoint as checkpoint_lib
from maskgit_jax.generation import sample_lib
from maskgit_jax.libml import editing
import tiny_run

ROOT = pathlib.Path(__file__).resolve().parents[1]
SIZE = tiny_run.IMAGE_SIZE  # 16 pixels, 8x8 tokens of 2x2 pixels.
PATCH = 2
GREY = 128  # Masked tokens and new canvas areas.


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return tiny_run.tiny_workdir(tmp_path_factory)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
  """A 16x16 grey image (used as is), a 24x20 colour one, and a mask."""
  folder = tmp_path_factory.mktemp("inputs")
  rs = np.random.RandomState(0)
  Image.fromarray(rs.randint(0, 256, (SIZE, SIZE), np.uint8)).save(
      folder / "grey.png")
  Image.fromarray(rs.randint(0, 256, (20, 24, 3), np.uint8)).save(
      folder / "colour.png")
  mask = np.zeros((SIZE, SIZE), np.uint8)
  mask[12:14, 3:5] = 255
  Image.fromarray(mask).save(folder / "mask.png")
  (folder / "text.png").write_text("not an image")
  return folder


def sample(workdir, *args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run(
      [sys.executable, "-m", "maskgit_jax.sample", f"--workdir={workdir}",
       *args], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)


def ok(result):
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def read(path):
  return np.asarray(Image.open(path))


def cells(grid, rows, cols, height, width):
  """Cells `[rows, cols, h, w]` of a `save_grid` PNG (padding 2; labels on
  the left are skipped)."""
  left = grid.shape[1] - (cols * (width + 2) + 2)
  return np.stack([np.stack([
      grid[2 + r * (height + 2):2 + r * (height + 2) + height,
           left + 2 + k * (width + 2):left + 2 + k * (width + 2) + width]
      for k in range(cols)]) for r in range(rows)])


def pixel_mask(latent_mask):
  return np.kron(latent_mask, np.ones((PATCH, PATCH))) > 0


def test_generate_and_strip(workdir, tmp_path):
  common = ["--classes=0,3", "--samples_per_class=2", "--num_iter=4",
            "--seed=5"]
  ok(sample(workdir, *common, f"--output={tmp_path / 'g.png'}",
            f"--tokens_output={tmp_path / 't.npy'}"))
  tokens = np.load(tmp_path / "t.npy")
  assert tokens.shape == (2, 2, 8, 8) and 0 <= tokens.min() <= tokens.max() < 16
  generated = cells(read(tmp_path / "g.png"), 2, 2, SIZE, SIZE)

  ok(sample(workdir, "--mode=strip", *common, f"--output={tmp_path / 's.png'}"))
  strip = read(tmp_path / "s.png")
  assert strip.shape[0] == 4 * (SIZE + 2) + 2  # a row per sample
  frames = cells(strip, 4, 4, SIZE, SIZE)  # columns: the 4 iterations
  assert (frames[:, 0] == GREY).mean() > 0.5  # first canvases mostly masked
  assert (frames[:, -1] == GREY).mean() < 0.2
  # The last column is the final sample: the `generate` grid, same seed.
  np.testing.assert_allclose(frames[:, -1].astype(int),
                             generated.reshape(4, SIZE, SIZE).astype(int),
                             atol=1)
  gif = Image.open(tmp_path / "s.gif")  # default name: the PNG's, .gif
  assert gif.size == (2 * (SIZE + 2) + 2,) * 2 and gif.n_frames >= 4
  gif.seek(0)
  first = np.asarray(gif.convert("L"))
  np.testing.assert_array_equal(
      cells(first, 2, 2, SIZE, SIZE).reshape(4, SIZE, SIZE), frames[:, 0])


def test_inpaint_box_keeps_the_rest_exactly(workdir, inputs, tmp_path):
  out = tmp_path / "inpaint.png"
  ok(sample(workdir, "--mode=inpaint", f"--input={inputs / 'grey.png'}",
            "--box=4_4_4_4", "--num_variations=2", "--blur_radius=0",
            f"--output={out}"))
  image = read(inputs / "grey.png")
  row = cells(read(out), 1, 3, SIZE, SIZE)[0]
  np.testing.assert_array_equal(row[0], image)
  region = pixel_mask(editing.latent_mask_from_box(editing.Box(4, 4, 4, 4),
                                                   SIZE, SIZE // PATCH))
  assert region.sum() == 8 * 8  # tokens 1..4: the box's, grown by one
  for variation in row[1:]:
    np.testing.assert_array_equal(variation[~region], image[~region])
    assert (variation[region] != image[region]).any()


def test_inpaint_mask_and_class(workdir, inputs, tmp_path):
  out = tmp_path / "mask.png"
  ok(sample(workdir, "--mode=inpaint", f"--input={inputs / 'grey.png'}",
            f"--mask={inputs / 'mask.png'}", "--class_id=3",
            "--num_variations=2", f"--output={out}"))
  image = read(inputs / "grey.png")
  row = cells(read(out), 1, 3, SIZE, SIZE)[0]
  region = pixel_mask(editing.latent_mask_from_pixels(
      read(inputs / "mask.png"), SIZE // PATCH))
  assert region[10:16, 0:8].all() and region.sum() == 6 * 8
  for variation in row[1:]:  # default blur at 16 pixels: 0
    np.testing.assert_array_equal(variation[~region], image[~region])
    assert (variation[region] != image[region]).any()


def test_outpaint_converts_and_extends(workdir, inputs, tmp_path):
  out = tmp_path / "outpaint.png"
  ok(sample(workdir, "--mode=outpaint", f"--input={inputs / 'colour.png'}",
            "--extend_left=3", "--extend_down=4", "--num_variations=2",
            f"--output={out}"))
  # Grey, center-cropped and resized like the data pipeline's evaluation.
  image = np.round(edit_lib.load_image(inputs / "colour.png", SIZE, 1)[..., 0]
                   * 255)
  with pytest.raises(FileNotFoundError, match=r"Image file not found: .* is "
                     r"a folder$"):
    edit_lib.load_image(inputs, SIZE, 1)
  row = cells(read(out), 1, 3, SIZE + 4, SIZE + 4)[0]  # 3 px -> 2 tokens
  np.testing.assert_array_equal(row[0, :SIZE, 4:], image)
  assert (row[0, :, :4] == GREY).all() and (row[0, SIZE:] == GREY).all()
  for variation in row[1:]:
    np.testing.assert_array_equal(variation[:SIZE, 4:], image)
    assert (variation[:, :4] != GREY).any() and (variation[SIZE:] != GREY).any()


def test_class_conditional_edit_with_blur(workdir, inputs, tmp_path):
  out = tmp_path / "edit.png"
  ok(sample(workdir, "--mode=edit", f"--input={inputs / 'grey.png'}",
            "--box=0_0_2_2", "--class_id=1", "--blur_radius=1",
            "--num_variations=2", f"--output={out}"))
  image = read(inputs / "grey.png").astype(int)
  row = cells(read(out), 1, 3, SIZE, SIZE)[0].astype(int)
  near = np.zeros((SIZE, SIZE), bool)
  near[:8, :8] = True  # tokens 0..1 (pixels 0..3) and the blur's reach
  for variation in row[1:]:
    np.testing.assert_array_equal(variation[~near], image[~near])
    assert (variation[:4, :4] != image[:4, :4]).any()
    # The blur blends into pixels just outside the regenerated tokens.
    assert (variation[4:6, :4] != image[4:6, :4]).any()


def test_load_workdir_prefers_ema(workdir):
  config, sampler = sample_lib.load_workdir(str(workdir))
  assert config.image_size == SIZE and isinstance(config.class_names, tuple)
  assert sampler.image_size == SIZE and sampler.num_classes == 10
  folder = str(workdir / "tokenizer" / "checkpoints")
  ema = checkpoint_lib.restore_params_with_info(folder, prefer_ema=True)[0]
  raw = checkpoint_lib.restore_params_with_info(folder, prefer_ema=False)[0]
  loaded = jax.tree.leaves(sampler.tokenizer_variables)
  for a, b in zip(loaded, jax.tree.leaves(ema)):
    np.testing.assert_array_equal(a, b)
  assert any(not np.array_equal(a, b)
             for a, b in zip(loaded, jax.tree.leaves(raw)))


ERRORS = {
    "class": (["--classes=0,10"],
              "error: Class id 10 is out of range [0, 10)."),
    "edit_class": (["--mode=edit", "--input={inputs}/grey.png",
                    "--box=0_0_4_4", "--class_id=-1"],
                   "error: Class id -1 is out of range [0, 10)."),
    "box": (["--mode=edit", "--input={inputs}/grey.png", "--box=12_10_8_4",
             "--class_id=1"],
            "error: Box top=12 left=10 height=8 width=4 is empty or outside "
            "the 16x16 image."),
    "unreadable": (["--mode=inpaint", "--input={inputs}/text.png",
                    "--box=0_0_4_4"],
                   "error: Cannot read image {inputs}/text.png: cannot "
                   "identify image file '{inputs}/text.png'"),
    "missing_image": (["--mode=inpaint", "--input={inputs}/nope.png",
                       "--box=0_0_4_4"],
                      "error: Image file not found: {inputs}/nope.png"),
    "missing_mask": (["--mode=inpaint", "--input={inputs}/grey.png",
                      "--mask={inputs}/nope.png"],
                     "error: Mask file not found: {inputs}/nope.png"),
    # The newest checkpoint's folder, then the first parameter that differs.
    "other_size": (["--config=configs/fashion_mnist.py"],
                   "error: {workdir}/tokenizer/checkpoints/{tok_step}: "
                   "variables do not match the model ("),
    "other_transformer": (
        ["--config=configs/fashion_mnist.py", "--config.image_size=16",
         "--config.tokenizer.preset=tiny",
         "--config.tokenizer.encoder_spatial_levels=None"],  # the run's
        "error: {workdir}/transformer/checkpoints/{tr_step}: variables do not "
        "match the model"),
    "missing_checkpoint": (["--workdir={tmp}/empty_run"],
                           "error: No readable checkpoint in "
                           "{tmp}/empty_run/transformer/checkpoints"),
    # --transformer_step reaches the loader: a step that is not there.
    "missing_step": (["--transformer_step=12345"],
                     "error: no checkpoint of step 12345 in "
                     "{workdir}/transformer/checkpoints (steps: [{tr_step}])"),
    "missing_workdir": (["--workdir={tmp}/nowhere"],
                        "error: Training run folder not found: {tmp}/nowhere"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_bad_input_is_one_line_and_writes_nothing(case, workdir, inputs,
                                                  tmp_path):
  args, message = ERRORS[case]
  names = dict(inputs=inputs, workdir=workdir, tmp=tmp_path,
               **{f"{short}_step": max(int(d) for d in os.listdir(
                   os.path.join(workdir, stage, "checkpoints")) if d.isdigit())
                  for short, stage in (("tok", "tokenizer"),
                                       ("tr", "transformer"))})
  if case == "missing_checkpoint":  # a run whose stage 2 never saved
    shutil.copytree(workdir, tmp_path / "empty_run")
    shutil.rmtree(tmp_path / "empty_run" / "transformer" / "checkpoints")
  out = tmp_path / "out" / "result.png"
  out.parent.mkdir()
  out.write_bytes(b"previous result")
  result = sample(workdir, *[a.format(**names) for a in args],
                  f"--output={out}")
  assert result.returncode != 0
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1, result.stderr
  assert lines[0].startswith(message.format(**names)), lines[0]
  assert out.read_bytes() == b"previous result"
  assert os.listdir(out.parent) == ["result.png"]
