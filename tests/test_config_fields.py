"""Every config in configs/ exposes its models' size fields: None takes the
preset's value, and `--config.transformer.KEY=VALUE` /
`--config.tokenizer.KEY=VALUE` override one of them on a locked config (the
commands the README gives). A run recorded before the fields existed resumes."""
import dataclasses
import json
import pathlib
import re

from absl import flags
from ml_collections import config_flags
import pytest

from maskgit_jax.nets import factory
from maskgit_jax.nets import maskgit_transformer
from maskgit_jax.nets import vqgan_tokenizer
from maskgit_jax.train_lib import config_checks
from maskgit_jax.train_lib import config_record
from maskgit_jax.train_lib import time_budget

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"
PRESET_CONFIGS = ("fashion_mnist", "fashion_mnist_long", "imagenet",
                  "imagenet512", "imagenet_vqgan")


def parse(name, *overrides):
  argv = ["prog", f"--config={CONFIGS / name}.py", *overrides]
  values = flags.FlagValues()
  holder = config_flags.DEFINE_config_file(
      "config", lock_config=True, flag_values=values, sys_argv=argv)
  values(argv)
  return holder.value


def sizes(module):
  return {f.name: getattr(module, f.name) for f in dataclasses.fields(module)
          if f.name not in ("parent", "name")}


@pytest.mark.parametrize("name", PRESET_CONFIGS)
def test_unset_fields_are_the_presets(name):
  config = parse(name)
  assert config.transformer.hidden_size is None
  assert config.tokenizer.codebook_size is None
  tok = factory.tokenizer_from_config(config)
  given = {k: v for k, v in config.tokenizer.to_dict().items()
           if v is not None and k != "preset"}
  want = vqgan_tokenizer.VQVAE.from_preset(config.tokenizer.preset, **given)
  assert sizes(tok) == sizes(want)
  model = factory.transformer_from_config(config)
  preset = maskgit_transformer.PRESETS[config.transformer.preset]
  for key in ("hidden_size", "num_hidden_layers", "num_attention_heads",
              "intermediate_size"):
    assert getattr(model, key) == preset[key], key


@pytest.mark.parametrize("name", PRESET_CONFIGS)
def test_one_size_overrides_on_the_command_line(name):
  config = parse(name, "--config.transformer.hidden_size=192",
                 "--config.transformer.intermediate_size=768",
                 "--config.transformer.dtype=bfloat16",
                 "--config.tokenizer.codebook_size=256")
  tok = factory.tokenizer_from_config(config)
  assert tok.codebook_size == 256
  model = factory.transformer_from_config(config)
  assert (model.hidden_size, model.intermediate_size) == (192, 768)
  assert model.vocab_size == 256 + config.num_classes + 1
  assert model.dtype.__name__ == "bfloat16"
  preset = maskgit_transformer.PRESETS[config.transformer.preset]
  assert model.num_hidden_layers == preset["num_hidden_layers"]


def test_folder_config_overrides_the_transformer():
  config = parse("folder", "--config.transformer.num_hidden_layers=2",
                 "--config.num_classes=3", "--config.tokenizer.preset=small",
                 "--config.tokenizer.channels=3")
  model = factory.transformer_from_config(config)
  assert model.num_hidden_layers == 2
  assert model.hidden_size == maskgit_transformer.PRESETS["small"][
      "hidden_size"]


def test_a_size_field_without_preset_or_value_is_one_error():
  config = parse("folder", "--config.num_classes=3",
                 "--config.tokenizer.channels=3")
  with pytest.raises(ValueError, match=r"config.tokenizer.channel_multipliers "
                     r"is unset"):
    factory.tokenizer_from_config(config)


def test_encoder_spatial_levels_from_the_command_line():
  config = parse("fashion_mnist", "--config.tokenizer.encoder_spatial_levels=1")
  assert factory.tokenizer_from_config(config).encoder_spatial_levels == 1
  # The demo's encoder: 3x3 kernels at 28x28 and 14x14; the shipped model's
  # recipe has it too since 2026-12-07, and a long run recorded before, with
  # the release's encoder, resumes with None.
  assert factory.tokenizer_from_config(
      parse("fashion_mnist")).encoder_spatial_levels == 2
  assert factory.tokenizer_from_config(
      parse("fashion_mnist_long")).encoder_spatial_levels == 2
  assert factory.tokenizer_from_config(parse(
      "fashion_mnist_long", "--config.tokenizer.encoder_spatial_levels=None"
  )).encoder_spatial_levels is None
  config = parse("fashion_mnist", "--config.tokenizer.encoder_spatial_levels=-1")
  with pytest.raises(ValueError, match=r"encoder_spatial_levels=-1 must be an int"):
    factory.tokenizer_from_config(config)
  config = parse("fashion_mnist", "--config.tokenizer.encoder_spatial_levels=x")
  with pytest.raises(ValueError, match=r"encoder_spatial_levels='x' must be an int"):
    factory.tokenizer_from_config(config)
  # configs/folder.py uses local tokens; None (the release's encoder, which
  # a folder run recorded before that default needs to resume) parses.
  assert parse("folder").tokenizer.encoder_spatial_levels == 1
  assert parse("folder", "--config.tokenizer.encoder_spatial_levels=None"
               ).tokenizer.encoder_spatial_levels is None


def test_a_record_without_the_new_fields_resumes(tmp_path):
  config = parse("fashion_mnist")
  config_record.record(config, str(tmp_path), log=lambda _: None)
  path = tmp_path / "config.json"
  old = json.loads(path.read_text())
  for section in ("tokenizer", "transformer"):
    old[section] = {k: v for k, v in old[section].items() if v is not None}
  assert "hidden_size" not in old["transformer"]
  path.write_text(json.dumps(old))
  config_record.record(config, str(tmp_path), log=lambda _: None)  # no error
  assert config_record.differences({"a": {}}, {"a": {"b": None}}) == []
  assert config_record.differences({"a": {}}, {"a": {"b": 3}}) == [
      ("a.b", None, 3)]
  changed = parse("fashion_mnist", "--config.transformer.hidden_size=64")
  # The record's None is the preset's value (the small preset's 128).
  with pytest.raises(ValueError, match=r"transformer.hidden_size: 128 -> 64"):
    config_record.record(changed, str(tmp_path), log=lambda _: None)


def test_fused_attention_from_the_command_line():
  """`--config.transformer.attention_impl=fused` needs the attention dropout
  off (the ImageNet recipe has 0.1): one error naming both keys."""
  with pytest.raises(ValueError, match=r"attention_impl='fused'.*"
                     r"attention_probs_dropout_prob=0.1"):
    factory.transformer_from_config(
        parse("imagenet", "--config.transformer.attention_impl=fused"))
  model = factory.transformer_from_config(parse(
      "imagenet", "--config.transformer.attention_impl=fused",
      "--config.transformer.attention_probs_dropout_prob=0.0"))
  assert model.attention_impl == "fused"
  assert factory.transformer_from_config(
      parse("imagenet")).attention_impl == "default"
  with pytest.raises(ValueError, match=r"attention_impl='flash'; expected"):
    factory.transformer_from_config(
        parse("imagenet", "--config.transformer.attention_impl=flash"))


def test_the_refused_resume_names_the_flags_that_resume_it(tmp_path):
  """A folder run recorded with the release's encoder and stage 1 in steps
  of 32 (the folder recipe before 2026-12-05), resumed with today's config:
  the one error line gives the overrides, and those overrides parsed on the
  command line give back the recorded config."""
  old = parse("folder", "--config.tokenizer.encoder_spatial_levels=None",
              "--config.tokenizer_training.batch_size=32")
  config_record.record(old, str(tmp_path), log=lambda _: None)
  with pytest.raises(ValueError) as error:
    config_record.record(parse("folder"), str(tmp_path), log=lambda _: None)
  message = str(error.value)
  assert "\n" not in message
  flags_given = message.split("resume it as it was trained with ")[1][:-1]
  assert flags_given.split() == [
      "--config.tokenizer.encoder_spatial_levels=None",
      "--config.tokenizer_training.batch_size=32"]
  config_record.record(parse("folder", *flags_given.split()), str(tmp_path),
                       log=lambda _: None)  # resumes: no error
  # A demo run recorded with Adam and 6,000 reconstruction steps (before
  # 2026-12-07): the offer also gives back its length, since its
  # decoder-only phase starts at the recorded step.
  demo_old = parse("fashion_mnist",
                   "--config.tokenizer_training.g_optimizer.name=adam",
                   "--config.tokenizer_training.num_steps=7000",
                   "--config.tokenizer_training.disc_start_step=6000")
  config_record.record(demo_old, str(tmp_path / "demo"), log=lambda _: None)
  with pytest.raises(ValueError) as error:
    config_record.record(parse("fashion_mnist"), str(tmp_path / "demo"),
                         log=lambda _: None)
  flags_given = str(error.value).split(
      "resume it as it was trained with ")[1][:-1].split()
  assert flags_given == [
      "--config.tokenizer_training.disc_start_step=6000",
      "--config.tokenizer_training.g_optimizer.name=adam",
      "--config.tokenizer_training.num_steps=7000"]
  config_record.record(parse("fashion_mnist", *flags_given),
                       str(tmp_path / "demo"), log=lambda _: None)
  # A model field recorded as None stands for the preset's value: the
  # refusal names that value and offers it as the override.
  other = tmp_path / "other"
  config_record.record(parse("folder"), str(other), log=lambda _: None)
  with pytest.raises(ValueError, match=r"num_hidden_layers: 4 -> 3\. "
                     r"Resuming would mix them; train into a new "
                     r"--workdir, or resume it as it was trained with "
                     r"--config\.transformer\.num_hidden_layers=4\.$"):
    config_record.record(parse(
        "folder", "--config.transformer.num_hidden_layers=3"), str(other),
        log=lambda _: None)
  config_record.record(parse(
      "folder", "--config.transformer.num_hidden_layers=4"), str(other),
      log=lambda _: None)  # the preset's value: the same run, resumes
  # None for a field whose flag parser rejects it (a placeholder(int)): no
  # overrides offered.
  assert config_record.resume_flags(
      [("transformer.num_hidden_layers", None, 3)], parse("folder")) == ""
  # Values a flag cannot give back as recorded: no overrides offered.
  config = parse("folder")
  for fixed in ([("nope.x", 3, 4)], [("image_size", "32", 64)],
                [("tokenizer_training.batch_size", True, 16)],
                [("class_names", ["a", "b"], ["a", "c"])]):
    assert config_record.resume_flags(fixed, config) == "", fixed
  assert config_record.resume_flags(
      [("data.path", "/my data", "/x")], config) == "'--config.data.path=/my data'"


def _leaves(tree, prefix=""):
  if isinstance(tree, dict):
    for key, value in tree.items():
      yield from _leaves(value, f"{prefix}.{key}" if prefix else key)
  else:
    yield prefix, tree


def test_the_long_config_is_the_shipped_checkpoints_recipe():
  """configs/fashion_mnist_long.py trains what checkpoints/fashion_mnist
  records (every field the record has; later fields are off by default),
  and differs from the demo's config in its lengths and stage 2's dtype
  only (the same encoder and optimizers since 2026-12-07)."""
  root = pathlib.Path(__file__).resolve().parents[1]
  recorded = json.loads((root / "checkpoints" / "fashion_mnist" /
                         "config.json").read_text())
  long = parse("fashion_mnist_long").to_dict()
  demo = parse("fashion_mnist").to_dict()
  long, demo = (json.loads(json.dumps(c, default=list)) for c in (long, demo))
  got = dict(_leaves(long))
  for key, value in _leaves(recorded):
    assert got[key] == value, key
  differ = {k for k, v in _leaves(demo) if got.get(k) != v}
  assert differ == {
      "tokenizer_training.num_steps",
      "tokenizer_training.decoder_finetune_steps",
      "tokenizer_training.disc_start_step",
      "transformer_training.num_steps", "transformer.dtype"}, differ


@pytest.mark.parametrize("name", ["fashion_mnist", "folder", "imagenet"])
def test_keep_checkpoints_none_keeps_all_from_the_command_line(name):
  """`keep_checkpoints=None` (keep every checkpoint) parses from a flag, as
  an int does; anything else is one line before training."""
  # The folder config's data.path (checked with the data's fields; no
  # folder is read here).
  path = ["--config.data.path=images"] if name == "folder" else []
  for section in ("tokenizer_training", "transformer_training"):
    config = parse(name)
    assert config[section].keep_checkpoints == 3
    config = parse(name, *path, f"--config.{section}.keep_checkpoints=None")
    assert config[section].keep_checkpoints is None
    config_checks.check_config(config)
    config = parse(name, f"--config.{section}.keep_checkpoints=7")
    assert config[section].keep_checkpoints == 7
    for bad in ("0", "x"):
      config = parse(name, *path,
                     f"--config.{section}.keep_checkpoints={bad}")
      config.stages = ("tokenizer", "transformer")
      with pytest.raises(ValueError, match=rf"^{section}.keep_checkpoints="):
        config_checks.check_config(config)


@pytest.mark.parametrize("name", ["fashion_mnist", "folder"])
def test_time_budget_none_and_numbers_from_the_command_line(name):
  """`--config.time_budget_s=None` parses (configs/folder.py sets a budget;
  None trains its own step counts, as its comment says), so do numbers;
  anything else is one line from the budget's check."""
  default = {"fashion_mnist": None, "folder": 1140}[name]
  assert parse(name).time_budget_s == default
  assert parse(name, "--config.time_budget_s=None").time_budget_s is None
  assert parse(name, "--config.time_budget_s=870").time_budget_s == 870
  assert parse(name, "--config.time_budget_s=870.5").time_budget_s == 870.5
  time_budget.check(parse(name, "--config.time_budget_s=870"))
  for bad in ("x", "-3", "True"):
    config = parse(name, f"--config.time_budget_s={bad}")
    with pytest.raises(ValueError, match=r"^config.time_budget_s=\S+ must be"):
      time_budget.check(config)


def test_every_none_override_the_readme_gives_parses():
  """Each `--config.KEY=None` the README tells users to pass parses to None
  on the configs it is given for (a field typed float or int would not)."""
  readme = (CONFIGS.parent / "README.md").read_text()
  keys = sorted(set(re.findall(r"--config\.([a-z0-9_.]+)=None", readme)))
  assert "time_budget_s" in keys and len(keys) >= 5, keys
  for name in ("fashion_mnist", "folder"):
    for key in keys:
      config = parse(name, f"--config.{key}=None")
      node = config
      for part in key.split("."):
        node = node[part]
      assert node is None, (name, key)
