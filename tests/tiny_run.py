"""A tiny trained run (both stages, two steps each), made once per session.

The command-line and notebook tests load it like a real run or the shipped
checkpoint. 16x16 grey images, 8x8 tokens of 2x2 pixels, 16 codes, 10
classes; the tokenizer keeps EMA weights besides its raw ones.
"""
import jax
import test_train

from maskgit_jax.train_lib import run

IMAGE_SIZE = 16
_RUNS = {}


def tiny_workdir(tmp_path_factory):
  """The path of the session's tiny run, trained on first use."""
  if "path" not in _RUNS:
    path = tmp_path_factory.mktemp("tiny_run")
    config = test_train.tiny_config(steps=2)
    config.image_size = IMAGE_SIZE
    config.data.max_examples = 64
    # One device: compiles faster than the 8 simulated ones.
    run.train_and_evaluate(config, str(path), devices=jax.devices()[:1])
    _RUNS["path"] = path
  return _RUNS["path"]
