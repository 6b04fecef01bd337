r"""Stage-1 ablation at equal wall time: what each part of the recipe buys.

  python benchmarks/tokenizer_ablation.py [--seconds=240] [--num_real=1000] \
      [--out=benchmarks/results/tokenizer_ablation.json]

On the embedded default (configs/fashion_mnist.py), trains the tokenizer
alone with each variant for the same wall-time budget and evaluates it on
held-out test images (PSNR, reconstruction FID beside its real-vs-real
floor at the same N, codebook usage):

  reconstruction only      L2 + VQ losses (the demo's stage 1 without GAN)
  + adversarial loss       the release's StyleGAN discriminator,
                           non-saturating loss, R1 penalty as configured
  + LeCAM                  the same with the LeCAM regulariser
  + decoder-only GAN phase the demo's stage 1: reconstruction only, then
                           the decoder alone against a small discriminator
                           (no R1) for the same share of the time as in
                           configs/fashion_mnist.py

Equal wall time: the steps of each variant are the budget times its
steps/s, measured in this run on the same batches, interleaved, so every
variant gets the same machine. The adversarial variants switch the GAN on
after the first third of their steps (`disc_start_step`), as the demo
config does. No perceptual loss: the only offline pretrained network here
is the FID Inception, which the measurement uses, and a model trained
against it would game FID; the perceptual loss on a network trained in the
run (`tokenizer_training.feature_net`) was measured on the demo's whole
stage 1 instead (README, "The stage-1 recipe").
"""
import argparse
import functools
import json
import os
import pathlib
import shutil
import sys
import time

import jax
import numpy as np

from maskgit_jax import cli
from maskgit_jax.common import allocator
from maskgit_jax.evaluation import evaluate_lib
from maskgit_jax.nets import factory
from maskgit_jax.train_lib import run as run_lib
from maskgit_jax.train_lib import tokenizer_task
import timing  # benchmarks/timing.py

ROOT = pathlib.Path(__file__).resolve().parents[1]


def demo_config():
  return cli.load_config_file(str(ROOT / "configs" / "fashion_mnist.py"))


def variant(name: str):
  """The demo config's stage 1 with the variant's losses."""
  config = demo_config()
  config.stages = ("tokenizer",)
  t = config.tokenizer_training
  t.image_every = 0
  if name == "+ decoder-only GAN phase":
    return config  # the demo's own
  t.decoder_finetune_steps = 0
  t.generator_adversarial_weight = 0.0
  t.lecam_weight = 0.0
  if name != "reconstruction only":
    t.generator_adversarial_weight = 0.1
    t.r1_cost = 10.0
    t.d_optimizer.b1 = 0.0  # the release's
    t.discriminator.max_filters = 32
  if name == "+ LeCAM":
    t.lecam_weight = 0.001
  return config


NAMES = ("reconstruction only", "+ adversarial loss", "+ LeCAM",
         "+ decoder-only GAN phase")


def steps_per_second(configs, repeats: int):
  """Interleaved step times of each variant's jitted train step."""
  fns, states = {}, {}
  for name, config in configs.items():
    c = config.tokenizer_training.copy_and_resolve_references()
    c.disc_start_step = 0  # Time the step with the GAN on,
    if c.decoder_finetune_steps:  # and in the decoder-only phase.
      c.num_steps, c.decoder_finetune_steps = 2, 1
    section = run_lib.resolve_durations(c, 60000 // c.batch_size, "tokenizer_training")
    tokenizer = factory.tokenizer_from_config(config)
    task = tokenizer_task.make_task(section, tokenizer, config.image_size,
                                    note=lambda m: None)
    # The trainer's step: compiled for the phase (no lax.cond inside).
    step = jax.jit(functools.partial(task.train_step,
                                     static_phase=task.phase(1)))
    size = config.image_size
    batch = {"image": jax.random.uniform(
        jax.random.PRNGKey(1), (section.batch_size, size, size,
                                tokenizer.channels))}
    states[name] = task.init(jax.random.PRNGKey(0))

    def fn(name=name, step=step, batch=batch):
      states[name], metrics = step(states[name], batch, None)
      return metrics
    fns[name] = fn
  times = timing.interleaved_times(fns, repeats)
  return {name: 1.0 / float(np.median(t)) for name, t in times.items()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--seconds", type=float, default=240.0,
                      help="training wall-time budget of each variant")
  parser.add_argument("--num_real", type=int, default=1000)
  parser.add_argument("--repeats", type=int, default=15)
  parser.add_argument("--variants", default=",".join(NAMES),
                      help="comma-separated subset of: " + ", ".join(NAMES))
  parser.add_argument("--workdir", default="/tmp/maskgit_tokenizer_ablation")
  parser.add_argument("--cache_dir", default=None,
                      help="real-feature cache (default WORKDIR/eval_cache)")
  parser.add_argument("--out", default=str(
      ROOT / "benchmarks" / "results" / "tokenizer_ablation.json"))
  args = parser.parse_args()
  chosen = [v.strip() for v in args.variants.split(",") if v.strip()]
  unknown = sorted(set(chosen) - set(NAMES))
  if unknown:
    parser.error(f"unknown variants {unknown}; choose from {NAMES}")
  configs = {name: variant(name) for name in NAMES
             if name in chosen or name == "reconstruction only"}
  rates = steps_per_second(configs, args.repeats)
  # Steps before the GAN starts run at the reconstruction-only rate.
  base = rates["reconstruction only"]
  rows = []
  for name, config in configs.items():
    if name not in chosen:
      continue
    t = config.tokenizer_training
    if name == "reconstruction only":
      steps = int(args.seconds * base)
    elif name == "+ decoder-only GAN phase":
      # The demo's split of the time between the two phases.
      tail = t.decoder_finetune_steps / rates[name]
      share = tail / ((t.num_steps - t.decoder_finetune_steps) / base + tail)
      first = int(args.seconds * (1 - share) * base)
      t.decoder_finetune_steps = int(args.seconds * share * rates[name])
      steps = first + t.decoder_finetune_steps
      t.disc_start_step = first
    else:
      # A third of the budget without the GAN, the rest with it.
      first = int(args.seconds / 3 * base)
      steps = first + int(args.seconds * 2 / 3 * rates[name])
      t.disc_start_step = first
    t.num_steps = steps
    workdir = os.path.join(args.workdir, name.replace(" ", "_").strip("+_"))
    shutil.rmtree(workdir, ignore_errors=True)
    start = time.perf_counter()
    run_lib.train_and_evaluate(config, workdir)
    wall = time.perf_counter() - start
    report = evaluate_lib.evaluate(
        None, workdir, stages=["tokenizer"], num_real=args.num_real,
        num_samples=args.num_real, progress=False,
        cache_dir=args.cache_dir or os.path.join(args.workdir, "eval_cache"))
    tok = report["tokenizer"]
    rows.append(dict(
        variant=name, steps=steps, steps_per_sec=rates[name],
        train_wall_s=round(wall, 1), psnr=tok["psnr"], rfid=tok["rfid"],
        rfid_floor=tok["rfid_floor"], rfid_over_floor=(
            tok["rfid"] / tok["rfid_floor"]),
        codebook_usage_percent=tok["codebook_usage_percent"]))
    print(json.dumps(rows[-1]), flush=True)
  out = {"budget_s": args.seconds, "num_real": args.num_real,
         "device": jax.devices()[0].device_kind, "rows": rows}
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(out, f, indent=1)
  print("| variant | steps | PSNR (dB) | rFID | floor | rFID / floor | "
        "codebook usage |")
  print("|---|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['variant']} | {r['steps']} | {r['psnr']:.2f} | "
          f"{r['rfid']:.1f} | {r['rfid_floor']:.1f} | "
          f"{r['rfid_over_floor']:.2f} | {r['codebook_usage_percent']:.0f}% |")


if __name__ == "__main__":
  allocator.maybe_reexec()  # as the entry points run
  sys.exit(main())
