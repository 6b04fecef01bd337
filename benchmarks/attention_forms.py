r"""The sampler's bf16 attention forms on a CPU, timed in turn in one process.

  python benchmarks/attention_forms.py --batches=2,8 \
      --out=benchmarks/results/attention_forms.json
  python benchmarks/attention_forms.py --tiny   # a check of the script

Forms of `attention.low_precision_attention` at inference (no mask, no
dropout), all giving the same values up to float32 rounding (checked here:
within `RTOL` of the output's scale; bit-identical on the AMD EPYC, while
on the AMX Xeon the per-head products round differently in about 0.2% of
the elements, by at most 2e-7 of the scale; the largest difference is in
the report):
  per_head      the library's (`attention._attend_per_head`): a loop over
                pairs of examples, each head's two products as 2-D matmuls;
  per_example   the previous one: a loop over examples (`lax.map`), the
                products batched over the heads;
  batched       the whole batch at once (what training uses).

For each batch: one attention layer of the transformer (query, key, value
`[batch, seq_len, heads, head_dim]` in bfloat16) in each form, and the whole
bf16 transformer forward (random weights, kernels cast once as the sampler
does) with `per_head` against `per_example`, each compiled once and timed
in turn for --rounds rounds (the median is reported). The shape is the
ImageNet-256 transformer's (24 layers, width 768, 16 heads, 257 tokens), or
the "tiny" preset's with --tiny. README "Measured" (the bf16 sampler row).
"""
import argparse
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# pylint: disable=wrong-import-position
from maskgit_jax.common import cpu_devices  # noqa: F401  (before jax starts)
import jax
import jax.numpy as jnp
import numpy as np

from maskgit_jax.nets import attention
from maskgit_jax.nets import maskgit_transformer
import reports  # benchmarks/reports.py
import timing  # benchmarks/timing.py


# The library's forms (module-private: this script compares them).
# pylint: disable=protected-access
_batched_form = attention._low_precision_attention
_per_head_form = attention._attend_per_head
# pylint: enable=protected-access


def per_example(query, key, value, precision=None):
  """The previous inference form: one example at a time, heads batched."""
  return jax.lax.map(lambda qkv: _batched_form(*qkv, precision=precision),
                     (query, key, value))


def batched(query, key, value, precision=None):
  """The whole batch at once (training's form)."""
  return _batched_form(query, key, value, precision=precision)


FORMS = {"per_head": _per_head_form, "per_example": per_example,
         "batched": batched}


def _interleaved(calls, rounds):
  """{name: median seconds} over `rounds`, each round calling every one."""
  times = timing.interleaved_times(calls, rounds)
  return {name: timing.median(t) for name, t in times.items()}


# The largest difference from the batched form a form may have, relative to
# the largest output: float32 rounding of products summed in another order.
RTOL = 1e-5
# The same for the two bf16 forwards' logits: an ulp of float32 in one
# attention can flip the bfloat16 rounding of the next layer's input, a
# step of 2^-8; over 24 layers that stays within a few bfloat16 steps (the
# ImageNet-256 transformer at batch 8 on the AMX Xeon: 0.004).
FORWARD_RTOL = 2.0 ** -6


def _max_difference(a, b):
  """max |a - b| relative to max |b| (0 where b is all zeros)."""
  scale = float(np.max(np.abs(b))) or 1.0
  return float(np.max(np.abs(a.astype(np.float64) - b))) / scale


def bench_layer(batch, seq_len, heads, depth, rounds):
  keys = jax.random.split(jax.random.PRNGKey(batch), 3)
  q, k, v = (jax.random.normal(key, (batch, seq_len, heads, depth),
                               jnp.bfloat16) for key in keys)
  compiled = {name: jax.jit(form).lower(q, k, v).compile()
              for name, form in FORMS.items()}
  outputs = {name: np.asarray(fn(q, k, v)) for name, fn in compiled.items()}
  differences = {name: _max_difference(out, outputs["batched"])
                 for name, out in outputs.items()}
  for name, difference in differences.items():
    if not difference <= RTOL:
      raise AssertionError(f"attention form {name} differs from the batched "
                           f"form by {difference:.3g} of its scale (more "
                           f"than {RTOL:g})")
  times = _interleaved({name: (lambda fn=fn: fn(q, k, v))
                        for name, fn in compiled.items()}, rounds)
  return {"seconds": times, "max_difference": differences,
          "flops": 4 * batch * heads * seq_len * seq_len * depth}


def bench_forward(model, variables, batch, rounds):
  ids = jnp.asarray(np.random.RandomState(0).randint(
      0, model.vocab_size - 1, (batch, model.max_position_embeddings)),
                    jnp.int32)
  variables = maskgit_transformer.cast_kernels(variables, jnp.bfloat16)
  library = _per_head_form
  compiled, compile_s = {}, {}
  for name, form in (("per_head", library), ("per_example", per_example)):
    attention._attend_per_head = form  # pylint: disable=protected-access
    try:
      start = time.perf_counter()
      # A new function per form: jit caches traces by function.
      compiled[name] = jax.jit(
          lambda v, x: model.apply(v, x, deterministic=True)).lower(
              variables, ids).compile()
      compile_s[name] = time.perf_counter() - start
    finally:
      attention._attend_per_head = library  # pylint: disable=protected-access
  logits = {name: np.asarray(fn(variables, ids))
            for name, fn in compiled.items()}
  times = _interleaved({name: (lambda fn=fn: fn(variables, ids))
                        for name, fn in compiled.items()}, rounds)
  difference = _max_difference(logits["per_head"], logits["per_example"])
  return {"seconds": times, "compile_s": compile_s,
          "same_logits": bool(np.array_equal(logits["per_head"],
                                             logits["per_example"])),
          "max_logit_difference": difference,
          "logits_close": difference <= FORWARD_RTOL}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batches", default="2,8")
  parser.add_argument("--rounds", type=int, default=4)
  parser.add_argument("--tiny", action="store_true",
                      help="the transformer's 'tiny' preset (a script check)")
  parser.add_argument("--out",
                      default="benchmarks/results/attention_forms.json")
  args = parser.parse_args(argv)
  preset = "tiny" if args.tiny else "imagenet256"
  model = maskgit_transformer.Transformer.from_preset(
      preset, dtype=jnp.bfloat16, hidden_dropout_prob=0.0,
      attention_probs_dropout_prob=0.0)
  ids = jnp.zeros((1, model.max_position_embeddings), jnp.int32)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), ids)
  heads = model.num_attention_heads
  depth = model.hidden_size // heads
  results = []
  for batch in [int(b) for b in args.batches.split(",")]:
    layer = bench_layer(batch, model.max_position_embeddings, heads, depth,
                        args.rounds)
    forward = bench_forward(model, variables, batch, args.rounds)
    row = {"batch": batch, "layer": layer, "forward": forward,
           "forward_speedup": forward["seconds"]["per_example"] /
                              forward["seconds"]["per_head"]}
    results.append(row)
    print(f"batch {batch}: one layer " + ", ".join(
        f"{k} {v * 1e3:.2f} ms" for k, v in layer["seconds"].items()) +
          f"; forward per_head {forward['seconds']['per_head']:.4f} s, "
          f"per_example {forward['seconds']['per_example']:.4f} s "
          f"({row['forward_speedup']:.2f}x), logits differ by "
          f"{forward['max_logit_difference']:.2g} of their scale",
          flush=True)
  reports.write_report(args.out, {
      "preset": preset, "backend": jax.default_backend(),
      "device_kind": jax.devices()[0].device_kind,
      "num_layers": model.num_hidden_layers, "heads": heads,
      "head_dim": depth, "seq_len": model.max_position_embeddings,
      "rounds": args.rounds, "load_average": timing.load_average(),
      "results": results})


if __name__ == "__main__":
  main()
