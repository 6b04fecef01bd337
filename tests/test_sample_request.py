"""`maskgit_jax.generation.request.run`: the one library call behind
`python -m maskgit_jax.sample`, its checks, and the CLI writing the same."""
import numpy as np
from PIL import Image
import pytest

from maskgit_jax.generation import request
import test_sample_cli

Request = request.Request


@pytest.mark.parametrize("kwargs,message", [
    (dict(mode="draw"), "mode 'draw' must be one of generate, strip, "),
    (dict(box="1_1_2_2"), "--box does not apply to --mode=generate (only to "
     "inpaint, edit)."),
    (dict(mode="strip", tokens_output="t.npy"),
     "--tokens_output does not apply to --mode=strip (only to generate)."),
    (dict(mode="inpaint", box="1_1_2_2"), "--mode=inpaint needs --input="),
    (dict(mode="inpaint", input="a.png"),
     "--mode=inpaint needs either --box or --mask."),
    (dict(mode="edit", input="a.png", box="1_1_2_2"),
     "--mode=edit needs --box and --class_id."),
    (dict(mode="edit", input="a.png", box="1_1_2_2", class_id=1,
          decode={"num_iter": 2}),
     "--mode=edit starts at iteration 2: --num_iter must be > 2."),
    (dict(mode="outpaint", input="a.png"), "--mode=outpaint needs a positive"),
    (dict(mode="outpaint", input="a.png", extend_up=-8, extend_left=8),
     "--extend_up=-8 must be an int >= 0."),
    (dict(shard_size=10), "--shard_size applies only with --num_samples."),
    (dict(num_samples=10, scale=2),
     "--scale does not apply with --num_samples."),
    (dict(batch_size=0), "--batch_size=0 must be an int >= 1."),
    (dict(decode={"num_iter": 0}), "--num_iter=0 must be an int >= 1."),
    (dict(classes=["3"]), "--classes must be integers, got '3'."),
    (dict(mode="inpaint", input="a.png", box="1_1_2_2", blur_radius=-1),
     "--blur_radius=-1 must be an int >= 0."),
    (dict(), "--config=FILE is required unless --workdir is given."),
])
def test_errors_name_the_option_before_anything_is_read(
    tmp_path, monkeypatch, kwargs, message):
  monkeypatch.chdir(tmp_path)  # Nothing may be written here.
  with pytest.raises(ValueError) as e:
    request.run(Request(**kwargs))
  assert str(e.value).startswith(message), str(e.value)
  assert not list(tmp_path.iterdir())


def tiny_config():
  config = test_sample_cli.load_config("fashion_mnist")
  config.image_size = 8
  config.num_classes = 3
  config.tokenizer.preset = "tiny"
  config.tokenizer.channels = 3
  config.transformer.preset = "tiny"
  config.class_names = ()
  return config


def test_run_writes_what_the_cli_writes(tmp_path):
  grid, tokens = tmp_path / "grid.png", tmp_path / "tokens.npy"
  written = request.run(Request(
      config=tiny_config(), random_init=True, classes=[0, 2],
      samples_per_class=3, batch_size=4, seed=5, output=str(grid),
      tokens_output=str(tokens), decode={"num_iter": 3}))
  assert written == [str(grid), str(tokens)]
  assert np.load(tokens).shape == (2, 3, 4, 4)
  assert Image.open(grid).height == 2 + 2 * (8 + 2)

  cli_grid, cli_tokens = tmp_path / "cli.png", tmp_path / "cli.npy"
  result = test_sample_cli.run(
      *test_sample_cli.TINY, "--random_init", "--classes=0,2",
      "--samples_per_class=3", "--batch_size=4", "--seed=5",
      f"--output={cli_grid}", f"--tokens_output={cli_tokens}")
  assert result.returncode == 0, result.stderr[-2000:]
  np.testing.assert_array_equal(np.load(cli_tokens), np.load(tokens))
  np.testing.assert_array_equal(np.asarray(Image.open(cli_grid)),
                                np.asarray(Image.open(grid)))


def test_inpaint_keeps_the_pixels_outside_the_box(tmp_path):
  rs = np.random.RandomState(0)
  pixels = rs.randint(0, 256, (8, 8, 3), np.uint8)
  Image.fromarray(pixels).save(tmp_path / "in.png")
  out = tmp_path / "inpaint.png"
  written = request.run(Request(
      mode="inpaint", config=tiny_config(), random_init=True,
      input=str(tmp_path / "in.png"), box="0_0_4_4", num_variations=2,
      blur_radius=0, output=str(out), decode={"num_iter": 2}))
  assert written == [str(out)]
  row = np.asarray(Image.open(out).convert("RGB"))
  # The input, then 2 variations, each 8 pixels wide with a 2-pixel margin.
  assert row.shape[1] == 2 + 3 * (8 + 2)
  panels = [row[2:10, 2 + i * 10:10 + i * 10] for i in range(3)]
  np.testing.assert_array_equal(panels[0], pixels)
  # Tokens of 2x2 pixels: the 4x4 box grown by one token is 6x6 pixels, and
  # every pixel outside it is the input's; inside, random weights paint.
  for panel in panels[1:]:
    np.testing.assert_array_equal(panel[6:], pixels[6:])
    np.testing.assert_array_equal(panel[:, 6:], pixels[:, 6:])
    assert np.abs(panel[:4, :4].astype(int) - pixels[:4, :4]).max() > 0
