r"""Stage 1's train step in each of its phases, timed interleaved in one run.

  python benchmarks/stage1_phases.py [--config=configs/fashion_mnist.py] \
      [--set=tokenizer_training.r1_cost=10.0 ...] [--conv_blur] \
      [--repeats=15] [--out=benchmarks/results/stage1_phases.json]

The trainer compiles one stage-1 step per static phase (`Task.phase`: GAN
off or on, decoder-only or not). This builds the config's stage-1 task with
a phase of each kind (reconstruction, GAN, decoder-only with its GAN: the
step counts shrunk to 3 with the GAN from step 1 and the last step
decoder-only; a config without the decoder phase has no third), and times
each phase's jitted step on one random batch, the rounds interleaved so
that each phase sees the same machine.

--conv_blur also times the GAN phases with the discriminator's blur pooling
as the depthwise convolution it is defined as (XLA's grouped convolution,
the form before `BlurPool2D` became strided slices): the same function, to
float rounding (tests/test_train_parts.py), in the same run.

Devices: JAX's as started (set XLA_FLAGS before, e.g.
--xla_force_host_platform_device_count=1 for one CPU device); the step
runs on one device, as `jax.jit` without shardings places it.
"""
import argparse
import functools
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from maskgit_jax.nets import discriminator  # pylint: disable=wrong-import-position
from maskgit_jax.nets import factory  # pylint: disable=wrong-import-position
from maskgit_jax.train_lib import run as run_lib  # pylint: disable=wrong-import-position
from maskgit_jax.train_lib import tokenizer_task  # pylint: disable=wrong-import-position
import config_overrides  # pylint: disable=wrong-import-position
import reports  # pylint: disable=wrong-import-position
import timing  # pylint: disable=wrong-import-position  # benchmarks/timing.py


def conv_blur(module, x):
  """`BlurPool2D`'s function as a depthwise convolution ('SAME', stride 2)."""
  taps = np.asarray(discriminator._BINOMIAL[module.filter_size])  # pylint: disable=protected-access
  kernel = np.outer(taps, taps) / np.sum(taps) ** 2
  channels = x.shape[-1]
  kernel = jnp.tile(jnp.asarray(kernel, x.dtype)[:, :, None, None],
                    (1, 1, 1, channels))
  return jax.lax.conv_general_dilated(
      x, kernel, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=channels, precision=jax.lax.Precision.HIGHEST)


def phase_task(config):
  """(task, batch, {name: phase}): the config's stage-1 task with a step of
  each phase kind it has (see the module docstring)."""
  c = config.tokenizer_training.copy_and_resolve_references()
  has_decoder_phase = bool(c.get("decoder_finetune_steps"))
  c.disc_start_step = 1
  c.num_steps = 3
  c.decoder_finetune_steps = 1 if has_decoder_phase else 0
  section = run_lib.resolve_durations(c, 1000, "tokenizer_training")
  tokenizer = factory.tokenizer_from_config(config)
  task = tokenizer_task.make_task(section, tokenizer, config.image_size,
                                  note=lambda m: None)
  size = config.image_size
  batch = {"image": jax.random.uniform(
      jax.random.PRNGKey(1), (section.batch_size, size, size,
                              tokenizer.channels))}
  names = ("reconstruction", "GAN", "decoder-only + GAN")
  phases = {}
  for step, name in zip(range(3), names):
    if task.phase(step) not in phases.values():
      phases[name] = task.phase(step)
  return task, batch, phases


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="configs/fashion_mnist.py")
  parser.add_argument("--set", action="append", default=[],
                      help="KEY=VALUE config override (repeatable)")
  parser.add_argument("--conv_blur", action="store_true",
                      help="also time the GAN phases with the blur as a "
                      "depthwise convolution")
  parser.add_argument("--repeats", type=int, default=15)
  parser.add_argument("--out", default="")
  args = parser.parse_args()
  config = config_overrides.load_config(args.config, args.set, 0)
  slices = discriminator.BlurPool2D.__call__
  fns = {}
  for blur in ("slices", "conv") if args.conv_blur else ("slices",):
    discriminator.BlurPool2D.__call__ = slices if blur == "slices" else conv_blur
    task, batch, phases = phase_task(config)
    for name, phase in phases.items():
      if blur == "conv" and phase == task.phase(0):
        continue  # no discriminator in the reconstruction phase
      label = name if blur == "slices" else f"{name}, blur as conv"
      step = jax.jit(functools.partial(task.train_step, static_phase=phase))
      holder = {"state": task.init(jax.random.PRNGKey(0))}

      def one(step=step, holder=holder):
        holder["state"], metrics = step(holder["state"], batch, None)
        return metrics["loss"]
      jax.block_until_ready(one())  # compiled (the blur form traced now)
      fns[label] = one
  discriminator.BlurPool2D.__call__ = slices
  times = timing.interleaved_times(fns, args.repeats)
  base = float(np.median(times["reconstruction"]))
  rows = {name: {"step_ms": float(np.median(t)) * 1e3,
                 "over_reconstruction": float(np.median(t)) / base}
          for name, t in times.items()}
  report = {"config": args.config, "overrides": args.set,
            "batch_size": int(batch["image"].shape[0]),
            "device": str(jax.devices()[0]), "repeats": args.repeats,
            "load_average": timing.load_average(), "phases": rows}
  print("| phase | step (ms) | / reconstruction step |")
  print("|---|---|---|")
  for name, r in rows.items():
    print(f"| {name} | {r['step_ms']:.1f} | {r['over_reconstruction']:.2f} |")
  if args.out:
    reports.write_report(args.out, report)


if __name__ == "__main__":
  main()
