"""`config.time_budget_s`: a new run's lengths scaled to fit the budget."""
import json
import time

import flax.linen as nn
import jax
import pytest
import test_train

from maskgit_jax.train_lib import config_checks
from maskgit_jax.train_lib import config_record
from maskgit_jax.train_lib import run
from maskgit_jax.train_lib import sharding as sharding_lib
from maskgit_jax.train_lib import time_budget as tb
from maskgit_jax.train_lib import tokenizer_task
from maskgit_jax.train_lib import transformer_task


def test_plan_factor_known_answers():
  # Stage 1 alone: (left - compile) / (steps x step time).
  assert tb.plan_factor(seconds_left=110, compile_s=10, step_s=0.1,
                        recon=1000, decoder=0, stage2=0,
                        records=0) == pytest.approx(1.0)
  # The demo's shape: decoder phase, stage 2 (its own measured times) and
  # its token cache.
  left, c, s, c2, s2 = 800.0, 30.0, 0.075, 12.0, 0.2
  fixed = (c * (1 + tb.DECODER_COMPILE) + c2 * (1 + tb.GRID_COMPILES) +
           60000 * tb.CACHE_PER_RECORD * s +
           (tb.MEASURE_STEPS["transformer"] + 3) * s2)
  expected = (left - fixed) / ((5000 + 1000) * s + 2500 * s2 * tb.IN_LOOP)
  got = tb.plan_factor(seconds_left=left, compile_s=c, step_s=s, recon=5000,
                       decoder=1000, stage2=2500, records=60000,
                       stage2_compile_s=c2, stage2_step_s=s2)
  assert got == pytest.approx(expected) and 0.5 < got < 0.7
  # A slower stage 2 leaves less for both stages.
  assert tb.plan_factor(seconds_left=left, compile_s=c, step_s=s, recon=5000,
                        decoder=1000, stage2=2500, records=60000,
                        stage2_compile_s=c2, stage2_step_s=2 * s2) < got
  # Clipped at both ends.
  assert tb.plan_factor(seconds_left=1e6, compile_s=1, step_s=0.01,
                        recon=10, decoder=0, stage2=0,
                        records=0) == tb.MAX_FACTOR
  assert tb.plan_factor(seconds_left=5, compile_s=10, step_s=0.1,
                        recon=1000, decoder=0, stage2=0,
                        records=0) == tb.MIN_FACTOR


def test_stage2_steps_known_answers():
  # (left - compile x (1 + grid)) / (step x in-loop), multiples of ROUND.
  left = 100 * 0.2 * tb.IN_LOOP + 10 * (1 + tb.GRID_COMPILES)
  assert tb.stage2_steps(seconds_left=left, compile_s=10, step_s=0.2,
                         nominal=100) == 100
  assert tb.stage2_steps(seconds_left=1e6, compile_s=10, step_s=0.2,
                         nominal=100) == 300
  assert tb.stage2_steps(seconds_left=0, compile_s=10, step_s=0.2,
                         nominal=1000) == 200


def test_scale_lengths_moves_the_phase_boundaries():
  config = test_train.load_config()  # 5000 + 1000 decoder-only, 2500
  t = config.tokenizer_training
  assert (t.num_steps, t.disc_start_step, t.decoder_finetune_steps) == (
      6000, 5000, 1000)
  scaled = tb.scale_lengths(config, 0.66)
  s = scaled.tokenizer_training
  assert (s.num_steps, s.disc_start_step, s.decoder_finetune_steps) == (
      3960, 3300, 660)
  assert scaled.transformer_training.num_steps == 1650
  assert tb.describe(scaled) == ("stage 1 3300 + 660 decoder-only steps, "
                                 "stage 2 1650 steps")
  assert config.tokenizer_training.num_steps == 6000  # a copy
  # Without a decoder phase: a GAN start inside stage 1 scales with it.
  t.decoder_finetune_steps, t.disc_start_step = 0, 2000
  s = tb.scale_lengths(config, 0.5).tokenizer_training
  assert (s.num_steps, s.disc_start_step, s.decoder_finetune_steps) == (
      3000, 1000, 0)


@pytest.mark.parametrize("value,message", [
    (-5, r"config.time_budget_s=-5(\.0)? must be"),
    (0, r"config.time_budget_s=0(\.0)? must be"),
    (float("nan"), r"config.time_budget_s=nan must be"),
    (float("inf"), r"config.time_budget_s=inf must be"),
])
def test_bad_budgets_are_refused_in_one_line(value, message):
  config = test_train.load_config()
  config.time_budget_s = value
  with pytest.raises(ValueError, match=message):
    config_checks.check_config(config)


def test_a_budget_needs_step_counts():
  config = test_train.load_config()
  config.time_budget_s = 600
  config.transformer_training.num_steps = "2 epochs"
  with pytest.raises(ValueError, match=r"config.time_budget_s=600 scales "
                     r"step counts, but transformer_training.num_steps="
                     r"'2 epochs' is not one"):
    config_checks.check_config(config)


def test_adopt_recorded_only_planned_lengths(tmp_path):
  config = test_train.load_config()
  planned = tb.scale_lengths(config, 0.5)
  planned.time_budget_s = 800
  config_record.rewrite(planned, str(tmp_path))
  config.time_budget_s = None  # a plain command resuming the planned run
  notes = []
  adopted = tb.adopt_recorded(config, str(tmp_path), note=notes.append)
  assert adopted.tokenizer_training.num_steps == 3000
  assert adopted.tokenizer_training.disc_start_step == 2500
  assert adopted.transformer_training.num_steps == 1250
  # The command's own lengths are named where they are not used.
  assert len(notes) == 1 and "keeps the lengths its first run planned" in (
      notes[0]), notes
  assert "transformer_training.num_steps=1250 (this command: 2500)" in (
      notes[0]), notes
  notes.clear()
  assert tb.adopt_recorded(adopted, str(tmp_path), note=notes.append
                           ).transformer_training.num_steps == 1250
  assert not notes  # the planned lengths themselves: nothing to say
  planned.time_budget_s = None  # a record without a budget: not adopted
  config_record.rewrite(planned, str(tmp_path))
  assert tb.adopt_recorded(config, str(tmp_path)).tokenizer_training \
      .num_steps == 6000


def _tasks(config, workdir):
  """Stage 1's and stage 2's tasks of `config`, the mesh and rules."""
  config, rules, tokenizer, transformer = run.prepare(config, str(workdir))
  mesh = sharding_lib.make_mesh(config.mesh, jax.devices()[:1])
  stage1 = tokenizer_task.make_task(config.tokenizer_training, tokenizer,
                                    config.image_size, note=lambda m: None,
                                    perceptual=None)
  stage2 = transformer_task.make_task(config.transformer_training, tokenizer,
                                      None, transformer, config.num_classes)
  return config, stage1, stage2, mesh, rules, tokenizer, transformer


def test_stage_two_timed_before_stage_one_and_reused_when_it_starts(
    tmp_path):
  """Stage 2 reading images (no token cache): `plan_lengths` times its step
  with a zero tokenizer of stage 1's shapes and plans both stages from the
  two measurements; `plan_stage2` times it again with the trained
  tokenizer's variables, on the program compiled before (no compile)."""
  config = test_train.tiny_config(steps=100)
  config.transformer_training.token_cache = False
  config.time_budget_s = 1e4
  config, stage1, stage2, mesh, rules, tokenizer, transformer = _tasks(config, tmp_path)
  budget = tb.Budget(1e4, time.time(), 100)
  lines = []
  planned = tb.plan_lengths(
      config, budget, stage1, (8, 8, 1), 0, mesh, rules,
      jax.random.PRNGKey(0), str(tmp_path), lines.append,
      stage2=(stage2, jax.random.PRNGKey(1),
              transformer.max_position_embeddings - 1,
              tokenizer.codebook_size))
  assert len(lines) == 1 and "; stage-2 step " in lines[0], lines
  assert "-> 3.00x the config's lengths: stage 1 300 steps, stage 2 300" in (
      lines[0])
  timer = budget.stage2_timer
  assert timer.task is stage2 and timer.compile_s > 0
  assert timer._step._cache_size() == 1  # pylint: disable=protected-access
  compiled = timer.compile_s
  # Stage 2 starts: the trained tokenizer (here: stage 1's initial one).
  tok_vars = {"params": nn.meta.unbox(
      jax.jit(stage1.init)(jax.random.PRNGKey(2)).params)}
  task = transformer_task.make_task(planned.transformer_training, tokenizer,
                                    tok_vars, transformer, config.num_classes)
  _, stop_by = tb.plan_stage2(planned, budget, task, (8, 8, 1), None, mesh,
                              rules, jax.random.PRNGKey(1), str(tmp_path),
                              lines.append)
  assert "-> stage 2 300 steps (planned before: 300)" in lines[1], lines
  assert timer._step._cache_size() == 1  # pylint: disable=protected-access
  assert timer.compile_s == compiled
  assert stop_by == pytest.approx(budget.deadline -
                                  tb.GRID_COMPILES * compiled)


def test_a_budgeted_run_plans_records_and_resumes_unchanged(tmp_path,
                                                           capsys):
  """A budget far beyond the steps: both stages get MAX_FACTOR times their
  10 steps, which config.json records and the checkpoints reach; running
  again plans nothing and trains nothing. Both stages' steps are timed
  before stage 1 (stage 2 on random token ids for its token cache)."""
  config = test_train.tiny_config(steps=10)
  config.tokenizer_training.checkpoint_every = 10
  config.transformer_training.checkpoint_every = 10
  config.tokenizer_training.log_every = 10
  config.transformer_training.log_every = 10
  config.time_budget_s = 1e5
  devices = jax.devices()[:1]
  run.train_and_evaluate(config, str(tmp_path), devices=devices)
  out = capsys.readouterr().out
  assert out.count("time budget (config.time_budget_s=100000):") == 2, out
  assert "-> 3.00x the config's lengths: stage 1 30 steps, stage 2 30" in out
  first_plan = out.split("time budget")[1]
  assert "stage-1 step" in first_plan and "; stage-2 step" in first_plan
  assert "-> stage 2 30 steps (planned before: 30)" in out
  record = json.loads((tmp_path / "config.json").read_text())
  assert record["tokenizer_training"]["num_steps"] == 30
  assert record["transformer_training"]["num_steps"] == 30
  assert record["time_budget_s"] == 1e5
  for stage in ("tokenizer", "transformer"):
    steps = sorted(int(p.name) for p in
                   (tmp_path / stage / "checkpoints").iterdir())
    assert steps[-1] == 30, (stage, steps)
  # Resumed with the same command: the recorded lengths, nothing planned.
  run.train_and_evaluate(config, str(tmp_path), devices=devices)
  out = capsys.readouterr().out
  assert "time budget (config" not in out  # nothing planned or timed
  assert "already trained (30 steps)" in out
  # The command's own lengths (10) are named as not used.
  assert ("keeps the lengths its first run planned: "
          "tokenizer_training.num_steps=30 (this command: 10), "
          "transformer_training.num_steps=30 (this command: 10)") in out
  assert not (tmp_path / config_record.CHANGES_FILE).exists()
  assert json.loads((tmp_path / "config.json").read_text()) == record


def test_a_stage_past_its_deadline_stops_saved_and_resumes(tmp_path,
                                                          capsys):
  """`stop_by` in the past: the stage stops at its first deadline check
  (step 10), saved; the same call then trains the remaining steps."""
  config = test_train.tiny_config(stages=("tokenizer",), steps=30)
  config.tokenizer_training.checkpoint_every = 100
  config.tokenizer_training.log_every = 100
  devices = jax.devices()[:1]
  original = run._run_stage  # pylint: disable=protected-access

  def late(*args, **kwargs):
    kwargs["stop_by"] = 0.0  # long past
    return original(*args, **kwargs)

  run._run_stage = late  # pylint: disable=protected-access
  try:
    run.train_and_evaluate(config, str(tmp_path), devices=devices)
  finally:
    run._run_stage = original  # pylint: disable=protected-access
  out = capsys.readouterr().out
  assert "time budget: stopped at step 10 of 30 (saved)" in out, out
  checkpoints = tmp_path / "tokenizer" / "checkpoints"
  assert sorted(int(p.name) for p in checkpoints.iterdir()) == [10]
  run.train_and_evaluate(config, str(tmp_path), devices=devices)
  assert "resumed from step 10" in capsys.readouterr().out
  assert sorted(int(p.name) for p in checkpoints.iterdir()) == [10, 30]
