"""train_lib/config_checks: values refused before config.json is written
or a step trains (each accepted before: found by sweeping every config key
through the reliability fuzz's bad values)."""
import os

import pytest

from maskgit_jax.train_lib import config_checks
from maskgit_jax.train_lib import periodic
from maskgit_jax.train_lib import run
import test_train


@pytest.mark.parametrize("key,value,message", [
    # An EMA decay outside [0, 1) made NaN or diverging EMA weights, which
    # stage 2 and the sampler then used.
    ("tokenizer_training.ema_decay", -1.0,
     "tokenizer_training.ema_decay=-1.0 must be a number in [0, 1) "
     "(0: no EMA)."),
    ("transformer_training.ema_decay", float("nan"),
     "transformer_training.ema_decay=nan must be a number in [0, 1)"),
    ("tokenizer_training.generator_adversarial_weight", float("nan"),
     "tokenizer_training.generator_adversarial_weight=nan must be a finite "
     "number >= 0."),
    ("tokenizer_training.r1_cost", -1.0,
     "tokenizer_training.r1_cost=-1.0 must be a finite number >= 0."),
    ("tokenizer_training.lecam_weight", float("inf"),
     "tokenizer_training.lecam_weight=inf must be a finite number >= 0."),
    ("tokenizer_training.codebook_restart_threshold", -1.0,
     "tokenizer_training.codebook_restart_threshold=-1.0 must be a finite "
     "number >= 0."),
    # Names checked only when stage 1's task was built (after config.json).
    ("tokenizer_training.gan_loss", "wasserstein",
     "tokenizer_training.gan_loss='wasserstein' must be one of "
     "'non-saturating', 'hinge'."),
    ("tokenizer_training.reconstruction_loss", "l3",
     "tokenizer_training.reconstruction_loss='l3' must be one of 'l2', "
     "'l1'."),
    ("tokenizer_training.perceptual_weights", "/no/such/inception.pt",
     "tokenizer_training.perceptual_weights='/no/such/inception.pt': no "
     "such file."),
    # The grids of samples written while training.
    ("transformer_training.samples.num_iter", 0,
     "transformer_training.samples.num_iter=0 must be an int >= 1."),
    ("transformer_training.samples.choice_temperature", -1.0,
     "transformer_training.samples.choice_temperature=-1.0 must be a finite "
     "number >= 0."),
    # Refused only once the data's size was known (after config.json).
    ("transformer_training.num_steps", 0,
     "transformer_training.num_steps=0 must be positive."),
    ("tokenizer_training.log_every", "2.5",
     "tokenizer_training.log_every='2.5' must be a whole number of steps."),
    ("num_classes", 0, "config.num_classes=0 must be an int >= 1."),
    # Found by the reliability fuzz, seed 3: a traceback from JAX when the
    # final grid was drawn, after both stages had trained; a grid scale of 0
    # or -1 was accepted.
    ("sampling.refine_steps", 10**15,
     "sampling.refine_steps=1000000000000000 must be an int in [0, "
     "2147483647] (0 = off)."),
    ("sampling.grid_scale", 0, "sampling.grid_scale=0 must be an int >= 1."),
    ("sampling.samples_per_class", -7,
     "sampling.samples_per_class=-7 must be an int >= 1."),
    # Fields the models own: given under data, they were silently ignored.
    ("data.image_size", 64,
     "config.data.image_size=64 is not read by training: the images are "
     "config.image_size=8; set config.image_size instead."),
    # The data's own fields, checked when the data set was built.
    ("data.resize_method", "sharp",
     "config.data.resize_method 'sharp' is not one of"),
    ("stages", ("tokenizer", "sampler"),
     "Unknown stage 'sampler' in config.stages"),
    # Ignored by a run that trains its tokenizer; `sample` and `evaluate`
    # then loaded that file instead of the run's tokenizer.
    ("tokenizer_checkpoint", "/x/tokenizer.msgpack",
     "config.tokenizer_checkpoint='/x/tokenizer.msgpack' is read only by a "
     "stage-2 run on a released tokenizer, but config.stages=('tokenizer', "
     "'transformer') trains its own: set --config.stages=transformer or "
     "--config.tokenizer_checkpoint=''."),
])
def test_bad_values_are_one_line_before_anything_is_written(key, value,
                                                            message):
  config = test_train.tiny_config()
  *parents, leaf = key.split(".")
  section = config
  for p in parents:
    section = section[p]
  with section.ignore_type():
    section[leaf] = value
  with pytest.raises(ValueError) as e:
    config_checks.check_config(config)
  assert str(e.value).startswith(message), str(e.value)


@pytest.mark.parametrize("name", ["fashion_mnist", "fashion_mnist_long",
                                  "folder", "imagenet_vqgan", "imagenet",
                                  "imagenet512"])
def test_every_shipped_config_passes(name):
  import test_config_fields  # pylint: disable=import-outside-toplevel
  path = ["--config.data.path=images"] if name == "folder" else []
  config_checks.check_config(test_config_fields.parse(name, *path))
  config_checks.check_config(test_train.tiny_config())


def test_whole_steps_only_epochs_and_examples_may_be_fractional():
  assert periodic.to_steps(3.0) == 3
  assert periodic.to_steps("0.5 epochs", steps_per_epoch=10) == 5
  with pytest.raises(ValueError, match="whole number of steps"):
    periodic.to_steps(2.5)


def test_labels_beyond_num_classes_stop_before_training(tmp_path):
  """Fashion-MNIST has 10 classes; with num_classes=5 the labels 5-9 were
  read as the mask token and beyond (JAX clamps the lookup): silently."""
  config = test_train.tiny_config(stages=("tokenizer",), steps=2)
  config.num_classes = 5
  with pytest.raises(ValueError, match=r"config.num_classes=5 but the "
                     r"training data \(fashion_mnist\) has 10 classes: set "
                     r"num_classes=10."):
    run.train_and_evaluate(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run" / "config.json")


@pytest.mark.parametrize("key,value,message", [
    ("num_samples", 0, "evaluation.num_samples=0 must be an int >= 4"),
    ("sample_labels", "uniform",
     "evaluation.sample_labels='uniform' must be one of 'reference', "
     "'balanced'."),
    ("evaluators.generation.every", "soon",
     "evaluation (transformer) every='soon': expected e.g. 1000"),
])
def test_evaluator_settings_stop_before_the_first_stage(tmp_path, key, value,
                                                        message):
  """Before, a bad setting stopped the run when its first evaluation was due:
  at the end of a stage (the generation evaluator's `every` when stage 2
  started, after stage 1 had trained)."""
  from maskgit_jax.evaluation import evaluators  # pylint: disable=import-outside-toplevel
  config = test_train.tiny_config(steps=2)
  config.evaluation.enabled = True
  *parents, leaf = key.split(".")
  section = config.evaluation
  for p in parents:
    section = section[p]
  with section.ignore_type():
    section[leaf] = value
  with pytest.raises(ValueError) as e:
    run.train_and_evaluate(config, str(tmp_path / "run"),
                           hooks=evaluators.make_hooks)
  assert str(e.value).startswith(message), str(e.value)
  assert not (tmp_path / "run").exists()
