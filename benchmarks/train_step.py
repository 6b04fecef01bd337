r"""Train-step benchmark: steps/s and achieved FLOP/s against the machine's peak.

  python benchmarks/train_step.py --out=benchmarks/results/train_step.json

For each stage of the embedded default (configs/fashion_mnist.py), the jitted
train step (the project's own `Task.train_step`) runs on random batches;
its FLOP count is XLA's cost analysis of the compiled step (forward, backward
and optimizer update as compiled; for stage 2 it includes the frozen
tokenizer's forward), so achieved FLOP/s = flops / median step time. The peak
is measured in the same run: the best of square matmuls of several sizes
(2 n^3 FLOPs each), separately for float32 and for bfloat16 inputs with
float32 accumulation. Utilisation = achieved / float32 peak (the steps run in
float32). Peak memory is the process's maximum resident set size.
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

from maskgit_jax import models
from timing import median_time  # benchmarks/timing.py
from maskgit_jax.train_lib import run as run_lib
from maskgit_jax.train_lib import tokenizer_task
from maskgit_jax.train_lib import transformer_task

ROOT = pathlib.Path(__file__).resolve().parents[1]


def matmul_peak(dtype, sizes=(512, 1024, 2048)):
  best = {}
  for n in sizes:
    a = jnp.asarray(np.random.rand(n, n), dtype)
    b = jnp.asarray(np.random.rand(n, n), dtype)
    f = jax.jit(lambda x, y: jnp.matmul(x, y,
                                        preferred_element_type=jnp.float32))
    t = median_time(lambda: f(a, b), 5)
    best[n] = 2 * n**3 / t
  return max(best.values()), best


def load_config():
  spec = importlib.util.spec_from_file_location(
      "fashion_mnist", ROOT / "configs" / "fashion_mnist.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def bench_task(task, batch, frozen, repeats):
  state = jax.jit(lambda r: nn.meta.unbox(task.init(r)))(jax.random.PRNGKey(0))
  step = jax.jit(task.train_step, donate_argnums=0)
  compiled = step.lower(state, batch, frozen).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", 0.0))
  holder = {"state": state}

  def one():
    holder["state"], metrics = step(holder["state"], batch, frozen)
    return metrics["loss"]
  t = median_time(one, repeats)
  return {"step_s": t, "steps_per_s": 1 / t, "flops_per_step": flops,
          "achieved_flops_per_s": flops / t}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--repeats", type=int, default=20)
  parser.add_argument("--out", default="benchmarks/results/train_step.json")
  args = parser.parse_args()
  config = load_config()
  tokenizer = models.tokenizer_from_config(config)
  transformer = models.transformer_from_config(config)
  size, ch = config.image_size, tokenizer.channels
  rs = np.random.RandomState(0)

  def batch(n):
    return {"image": jnp.asarray(rs.rand(n, size, size, ch), jnp.float32),
            "label": jnp.asarray(rs.randint(0, 10, n), jnp.int32)}

  t1 = run_lib.resolve_durations(config.tokenizer_training, 60000,
                                 "tokenizer_training")
  t2 = run_lib.resolve_durations(config.transformer_training, 60000,
                                 "transformer_training")
  stage1 = tokenizer_task.make_task(t1, tokenizer, size, note=lambda m: None)
  tok_vars = models.init_tokenizer(tokenizer, jax.random.PRNGKey(1), size)
  stage2 = transformer_task.make_task(t2, tokenizer, tok_vars, transformer,
                                      config.num_classes)
  results = {
      "tokenizer": dict(batch_size=t1.batch_size, **bench_task(
          stage1, batch(t1.batch_size), None, args.repeats)),
      "transformer": dict(batch_size=t2.batch_size, **bench_task(
          stage2, batch(t2.batch_size), tok_vars, args.repeats)),
  }
  peak32, sizes32 = matmul_peak(jnp.float32)
  peak16, sizes16 = matmul_peak(jnp.bfloat16)
  for r in results.values():
    r["utilisation_of_f32_peak"] = r["achieved_flops_per_s"] / peak32
  report = {"device": str(jax.devices()[0]), "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "matmul_peak_f32": peak32, "matmul_peak_bf16": peak16,
            "matmul_by_size_f32": sizes32, "matmul_by_size_bf16": sizes16,
            "stages": results,
            "peak_rss_mb": resource.getrusage(
                resource.RUSAGE_SELF).ru_maxrss / 1024}
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(report, f, indent=1, default=str)
  print(f"matmul peak: f32 {peak32 / 1e9:.0f} GFLOP/s, bf16 (f32 accumulate) "
        f"{peak16 / 1e9:.0f} GFLOP/s")
  print("| stage | batch | step (ms) | steps/s | GFLOP/step | GFLOP/s | "
        "of f32 peak |")
  print("|---|---|---|---|---|---|---|")
  for name, r in results.items():
    print(f"| {name} | {r['batch_size']} | {r['step_s'] * 1e3:.1f} | "
          f"{r['steps_per_s']:.2f} | {r['flops_per_step'] / 1e9:.2f} | "
          f"{r['achieved_flops_per_s'] / 1e9:.1f} | "
          f"{r['utilisation_of_f32_peak']:.1%} |")
  print(f"peak RSS {report['peak_rss_mb']:.0f} MB; wrote {args.out}")


if __name__ == "__main__":
  main()
