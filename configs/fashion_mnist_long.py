"""The embedded default's recipe at its earlier length: the shipped model.

Launch:
  python -m maskgit_jax.train --config=configs/fashion_mnist_long.py \
      --workdir=runs/fashion_mnist_long

`configs/fashion_mnist.py` (what `make demo` runs) with 11,000 reconstruction
steps and 3,000 decoder-only steps in stage 1 and 4,000 float32 steps in
stage 2. This recipe trained the shipped checkpoint (checkpoints/fashion_mnist,
`make checkpoint`). Expected cost on a 2-core CPU: about 24 minutes wall
(23-27 min measured on two machines), 1.4 GB RAM; at N=1000 its samples
score about 1.6x the real-vs-real FID floor and its reconstructions 1.19x-1.23x
(README "Measured"), against 1.74x and 1.30x for the 15-minute demo.
Since 2026-12-06 both configs compute the tokenizer's GroupNorm statistics
as matrix-vector products (`tokenizer.group_norm="matmul"`) and stage 1's
gradients in one all-reduce, which the shipped run did not: the same
recipe to float rounding, its stage 1 faster (about a quarter less time
a step in the demo's loop); this length not timed since.
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
                               transformer_steps=4000, commitment_cost=0.05)
