"""benchmarks/train_step.py: the utilisation is measured interleaved.

A fake task (one matmul) and fake timings with a known answer: each round's
achieved FLOP/s is divided by the matmul rate of the same round, and the
figure is the median over rounds, so a slow spell of the machine that hits
a step and its round's matmul alike cancels out.
"""
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] /
                       "benchmarks"))
import train_step  # pylint: disable=wrong-import-position


class _MatmulTask:
  """State `{"w": [16, 16]}`; the step multiplies a `[8, 16]` batch by it."""

  def init(self, rng):
    return {"w": jax.random.normal(rng, (16, 16))}

  def train_step(self, state, batch, frozen):
    del frozen
    loss = jnp.sum(batch["x"] @ state["w"])
    return {"w": state["w"] * 0.5}, {"loss": loss}


def test_utilisation_is_the_median_of_per_round_ratios(monkeypatch):
  calls = []

  def fake_times(fns, repeats):
    for fn in fns.values():  # both functions really run
      calls.append(jax.block_until_ready(fn()))
    # Round 2 is a slow spell: the step and the matmul both take 4x.
    return {"step": [1.0, 4.0, 1.5][:repeats],
            "peak": [2.0, 8.0, 2.0][:repeats]}

  monkeypatch.setattr(train_step.timing, "interleaved_times", fake_times)
  batch = {"x": jnp.asarray(np.ones((8, 16)), jnp.float32)}
  peak_flops = 1000.0
  out = train_step.bench_task(_MatmulTask(), batch, None, 3,
                              peak=(lambda: jnp.ones(()), peak_flops))
  flops = out["flops_per_step"]
  assert flops >= 2 * 8 * 16 * 16  # XLA's count of the step (x devices)
  # Per round: (flops / step) / (peak_flops / peak_time).
  ratios = [flops / 1.0 / 500.0, flops / 4.0 / 125.0, flops / 1.5 / 500.0]
  got = out["interleaved"]
  np.testing.assert_allclose(got["utilisation"], np.median(ratios))
  np.testing.assert_allclose(got["utilisation_min"], min(ratios))
  np.testing.assert_allclose(got["utilisation_max"], max(ratios))
  np.testing.assert_allclose(out["step_s"], 1.5)  # median step
  np.testing.assert_allclose(got["peak_median_flops_per_s"], 500.0)
  assert len(calls) == 2


class _PhasedTask(_MatmulTask):
  """Two phases: steps 0-5 scale the weights by 0.5, steps 6-9 by 2.0."""
  num_steps = 10

  def phase(self, step):
    return step >= 6

  def train_step(self, state, batch, frozen, late):
    del frozen
    loss = jnp.sum(batch["x"] @ state["w"])
    return {"w": state["w"] * (2.0 if late else 0.5)}, {"loss": loss}


def test_phased_step_is_compiled_for_the_phase_of_most_steps():
  """A task with `phase` (the tokenizer's) is timed as the trainer runs it:
  compiled for the static phase that most of its steps run in."""
  task = _PhasedTask()
  assert train_step.most_steps_phase(task) is False
  task.num_steps = 20  # now steps 6-19, the late phase, are the most
  assert train_step.most_steps_phase(task) is True
  batch = {"x": jnp.ones((8, 16))}
  one, _, _, _ = train_step.compile_step(task, batch, None)
  w0 = np.asarray(task.init(jax.random.PRNGKey(0))["w"])
  expected = np.sum(np.ones((8, 16)) @ (w0 * 2.0))  # one late step first
  one()
  np.testing.assert_allclose(float(one()), expected, rtol=1e-4)


def test_stage1_phases_builds_each_phase_kind_and_refuses_unknown_keys():
  """benchmarks/stage1_phases.py: the demo's config has all three phase
  kinds, the GAN phase once the decoder phase is switched off has two; the
  blur as a convolution (its reference form) is BlurPool2D's function; an
  unknown override key stops with one line naming it."""
  import pytest  # pylint: disable=import-outside-toplevel
  import stage1_phases  # pylint: disable=import-outside-toplevel
  from maskgit_jax.nets import discriminator  # pylint: disable=import-outside-toplevel
  config = stage1_phases.config_overrides.load_config(
      "configs/fashion_mnist.py", [], 0)
  _, batch, phases = stage1_phases.phase_task(config)
  assert list(phases) == ["reconstruction", "GAN", "decoder-only + GAN"]
  assert len(set(phases.values())) == 3
  assert batch["image"].shape == (16, 28, 28, 1)
  config = stage1_phases.config_overrides.load_config(
      "configs/fashion_mnist.py",
      ["tokenizer_training.decoder_finetune_steps=0"], 0)
  assert config.tokenizer_training.decoder_finetune_steps == 0
  assert list(stage1_phases.phase_task(config)[2]) == ["reconstruction", "GAN"]
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 14, 14, 3))
  blur = discriminator.BlurPool2D()
  np.testing.assert_allclose(stage1_phases.conv_blur(blur, x),
                             blur.apply({}, x), rtol=1e-5, atol=1e-6)
  for bad, line in (("tokenizer_training.nope=1", "unknown config key"),
                    ("nope.lr=1", "unknown config key"),
                    ("seed.x=1", "unknown config key"),
                    ("no_equals_sign", "expected KEY=VALUE")):
    with pytest.raises(SystemExit, match=f"error: .*{line}"):
      stage1_phases.config_overrides.load_config(
          "configs/fashion_mnist.py", [bad], 0)
