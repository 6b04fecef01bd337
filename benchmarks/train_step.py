r"""Train-step benchmark: steps/s and achieved FLOP/s against the machine's peak.

  python benchmarks/train_step.py --out=benchmarks/results/train_step.json
  python benchmarks/train_step.py --transformer_dtype=bfloat16 \
      --out=benchmarks/results/train_step_bf16.json

For each stage of the embedded default (configs/fashion_mnist.py), the jitted
train step (the project's own `Task.train_step`) runs on random batches.

FLOPs per step: XLA's cost analysis of the compiled step (forward, backward
and optimizer update as compiled; for stage 2 it includes the frozen
tokenizer's forward). For stage 2 the analytic count is given beside it:
6 * N * B * S + 12 * L * B * S^2 * d, with N the parameters that multiply
activations (every kernel plus the tied output embedding), B the batch,
S the sequence length, L layers, d the hidden size (2 FLOPs per
multiply-add, backward = 2 x forward; the second term is the attention's
two S x S products).

Achieved FLOP/s = FLOPs per step / median step time (--repeats steps after
one warm-up). The peak is measured in the same run: the best of square
matmuls of several sizes (2 n^3 FLOPs each), inputs float32 and bfloat16
(float32 accumulation) separately. On a CPU the steps run in float32 and
utilisation is against the float32 peak. On a GPU
(`jax.devices()[0].platform == "gpu"`) the peak is the card's bfloat16
matmul rate and the utilisation is model FLOP utilisation (MFU) against it.

Memory: XLA's memory analysis of each compiled step (arguments + outputs -
aliased + temporaries), the process's peak resident set size after each
stage, and on a GPU the allocator's peak bytes in use.
"""
import argparse
import importlib.util
import json
import os
import pathlib
import platform
import resource

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from maskgit_jax.nets import factory
from maskgit_jax.store import loader
from maskgit_jax.train_lib import run as run_lib
from maskgit_jax.train_lib import tokenizer_task
from maskgit_jax.train_lib import transformer_task
import timing  # benchmarks/timing.py

ROOT = pathlib.Path(__file__).resolve().parents[1]
PEAK_SIZES = {"cpu": (512, 1024, 2048), "gpu": (2048, 4096, 8192)}
ANALYTIC_FORMULA = "6*N*B*S + 12*L*B*S^2*d"


def matmul_peak(dtype, sizes, repeats=5):
  """(best FLOP/s, {n: FLOP/s}) of n x n matmuls, float32 accumulation."""
  by_size = {}
  f = jax.jit(lambda x, y: jnp.matmul(x, y,
                                      preferred_element_type=jnp.float32))
  for n in sizes:
    rs = np.random.RandomState(n)
    a = jnp.asarray(rs.rand(n, n), dtype)
    b = jnp.asarray(rs.rand(n, n), dtype)
    t = timing.median_time(lambda: f(a, b), repeats)
    by_size[n] = 2 * n**3 / t
  return max(by_size.values()), by_size


def load_config():
  spec = importlib.util.spec_from_file_location(
      "fashion_mnist", ROOT / "configs" / "fashion_mnist.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _memory(compiled):
  try:
    m = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if m is None:
    return None
  out = {k: int(getattr(m, k)) for k in (
      "argument_size_in_bytes", "output_size_in_bytes",
      "alias_size_in_bytes", "temp_size_in_bytes",
      "generated_code_size_in_bytes") if hasattr(m, k)}
  out["peak_estimate_bytes"] = (out.get("argument_size_in_bytes", 0) +
                                out.get("output_size_in_bytes", 0) -
                                out.get("alias_size_in_bytes", 0) +
                                out.get("temp_size_in_bytes", 0))
  return out


def bench_task(task, batch, frozen, repeats):
  state = jax.jit(lambda r: nn.meta.unbox(task.init(r)))(jax.random.PRNGKey(0))
  step = jax.jit(task.train_step, donate_argnums=0)
  compiled = step.lower(state, batch, frozen).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", 0.0))
  holder = {"state": state}

  def one():
    holder["state"], metrics = compiled(holder["state"], batch, frozen)
    return metrics["loss"]
  t = timing.median_time(one, repeats)
  return {"step_s": t, "steps_per_s": 1 / t, "flops_per_step": flops,
          "achieved_flops_per_s": flops / t, "repeats": repeats,
          "compiled_memory": _memory(compiled)}


def analytic_transformer_flops(transformer, params, batch_size):
  """6*N*B*S + 12*L*B*S^2*d (see the module docstring)."""
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  n = sum(int(np.prod(x.shape)) for path, x in flat
          if getattr(path[-1], "key", None) == "kernel")
  n += transformer.vocab_size * transformer.hidden_size  # tied output layer
  s, layers, d = (transformer.max_position_embeddings,
                  transformer.num_hidden_layers, transformer.hidden_size)
  return {"formula": ANALYTIC_FORMULA, "N": n, "B": batch_size, "S": s,
          "L": layers, "d": d,
          "flops_per_step": float(6 * n * batch_size * s +
                                  12 * layers * batch_size * s * s * d)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--repeats", type=int, default=20)
  parser.add_argument("--out", default="benchmarks/results/train_step.json")
  parser.add_argument("--transformer_dtype", default="float32",
                      choices=("float32", "bfloat16"),
                      help="stage 2's compute dtype (bfloat16: the fast "
                      "precision mode, float32 parameters and accumulation; "
                      "its utilisation is against the bfloat16 peak)")
  args = parser.parse_args()
  device = jax.devices()[0]
  gpu = device.platform == "gpu"
  repeats = args.repeats * (5 if gpu else 1)  # GPU steps take milliseconds
  config = load_config()
  config.transformer.dtype = args.transformer_dtype
  tokenizer = factory.tokenizer_from_config(config)
  transformer = factory.transformer_from_config(config)
  size, ch = config.image_size, tokenizer.channels
  rs = np.random.RandomState(0)

  def batch(n):
    return {"image": jnp.asarray(rs.rand(n, size, size, ch), jnp.float32),
            "label": jnp.asarray(rs.randint(0, 10, n), jnp.int32)}

  t1 = run_lib.resolve_durations(config.tokenizer_training, 60000 // config.tokenizer_training.batch_size,
                                 "tokenizer_training")
  t2 = run_lib.resolve_durations(config.transformer_training, 60000 // config.transformer_training.batch_size,
                                 "transformer_training")
  stage1 = tokenizer_task.make_task(t1, tokenizer, size, note=lambda m: None)
  tok_vars, _ = loader.load_stage(config, "tokenizer", tokenizer,
                                  random_init=True)
  stage2 = transformer_task.make_task(t2, tokenizer, tok_vars, transformer,
                                      config.num_classes)
  rss_start = rss_mb()
  results = {"tokenizer": dict(batch_size=t1.batch_size, **bench_task(
      stage1, batch(t1.batch_size), None, repeats))}
  results["tokenizer"]["peak_rss_mb_after"] = rss_mb()
  results["transformer"] = dict(batch_size=t2.batch_size, **bench_task(
      stage2, batch(t2.batch_size), tok_vars, repeats))
  results["transformer"]["peak_rss_mb_after"] = rss_mb()
  tr_params = loader.load_stage(config, "transformer", transformer,
                                random_init=True)[0]["params"]
  results["transformer"]["analytic"] = analytic_transformer_flops(
      transformer, tr_params, t2.batch_size)
  results["tokenizer"]["dtype"] = "float32"
  results["transformer"]["dtype"] = args.transformer_dtype

  sizes = PEAK_SIZES["gpu" if gpu else "cpu"]
  peak16, sizes16 = matmul_peak(jnp.bfloat16, sizes)
  peak32, sizes32 = (None, {}) if gpu else matmul_peak(jnp.float32, sizes)
  reference = "bfloat16" if gpu else "float32"
  peak_ref = peak16 if gpu else peak32
  for r in results.values():
    # Against the peak of the precision the step computes in.
    bf16 = gpu or r["dtype"] == "bfloat16"
    r["utilisation_reference"] = "bfloat16" if bf16 else reference
    r["utilisation"] = r["achieved_flops_per_s"] / (peak16 if bf16
                                                   else peak_ref)
    r["utilisation_of_bf16_peak"] = r["achieved_flops_per_s"] / peak16
  report = {
      "device": str(device), "platform": device.platform,
      "device_kind": device.device_kind, "machine": platform.platform(),
      "cpu_count": os.cpu_count(), "jax_version": jax.__version__,
      "flops_counting": "XLA cost analysis of the compiled train step "
                        "(forward + backward + optimizer update; stage 2 "
                        "includes the frozen tokenizer's encoder); stage 2 "
                        f"also analytic {ANALYTIC_FORMULA}",
      "peak_method": "best of n x n matmuls, n in "
                     f"{list(sizes)}, 2 n^3 FLOPs, float32 accumulation",
      "utilisation_reference": reference,
      "matmul_peak_f32": peak32, "matmul_peak_bf16": peak16,
      "matmul_by_size_f32": sizes32, "matmul_by_size_bf16": sizes16,
      "stages": results,
      "peak_rss_mb_start": rss_start,
      "peak_rss_mb": rss_mb(),
      "load_average": timing.load_average(),
  }
  if gpu:
    stats = device.memory_stats() or {}
    report["device_peak_bytes_in_use"] = stats.get("peak_bytes_in_use")
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(report, f, indent=1, default=str)
  f32_text = "" if gpu else f"f32 {peak32 / 1e9:.0f} GFLOP/s, "
  print(f"matmul peak: {f32_text}bf16 (f32 accumulate) {peak16 / 1e9:.0f} "
        "GFLOP/s")
  print("| stage | dtype | batch | step (ms) | steps/s | GFLOP/step | "
        "GFLOP/s | of the peak |")
  print("|---|---|---|---|---|---|---|---|")
  for name, r in results.items():
    print(f"| {name} | {r['dtype']} | {r['batch_size']} | "
          f"{r['step_s'] * 1e3:.1f} | "
          f"{r['steps_per_s']:.2f} | {r['flops_per_step'] / 1e9:.2f} | "
          f"{r['achieved_flops_per_s'] / 1e9:.1f} | "
          f"{r['utilisation']:.1%} ({r['utilisation_reference']}) |")
  print(f"peak RSS {report['peak_rss_mb']:.0f} MB; wrote {args.out}")


if __name__ == "__main__":
  main()
