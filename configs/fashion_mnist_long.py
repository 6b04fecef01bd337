"""The embedded default's recipe at its longer length: the shipped model.

Launch:
  python -m maskgit_jax.train --config=configs/fashion_mnist_long.py \
      --workdir=runs/fashion_mnist_long

`configs/fashion_mnist.py` (what `make demo` runs) with 11,000
reconstruction steps and 3,000 decoder-only steps in stage 1 and 4,000
float32 steps in stage 2: the same tokenizer (1x1 kernels in the encoder's
blocks at 7x7), the same optimizers (stage 1's weight matrices by Muon) and
the same sampling. This recipe trains the shipped checkpoint
(checkpoints/fashion_mnist, `make checkpoint`). Expected cost on a 2-core
CPU: about 25 minutes wall and 1.6 GB RAM (see
checkpoints/fashion_mnist/README.md for the run that made the shipped
weights and their figures at N=1000, and README "Measured").
Before 2026-12-07 it had the release's encoder (3x3 kernels at every level)
and Adam in stage 1: a run recorded with that recipe resumes with
`--config.tokenizer.encoder_spatial_levels=None
--config.tokenizer_training.g_optimizer.name=adam`.
"""
import importlib.util
import pathlib

_spec = importlib.util.spec_from_file_location(
    "maskgit_configs_fashion_mnist",
    pathlib.Path(__file__).with_name("fashion_mnist.py"))
_fashion_mnist = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fashion_mnist)


def get_config():
  return _fashion_mnist.recipe(reconstruction_steps=11000, decoder_steps=3000,
                               transformer_steps=4000)
