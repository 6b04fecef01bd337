"""Default config sections for training, shared by the files in configs/.

`tokenizer_training()` holds the release's VQGAN recipe
(maskgit/configs/vqgan_config.py), `transformer_training()` the release's
MaskGIT recipe (maskgit_class_cond_config.py); configs override what differs.
Durations (`num_steps`, `*_every`, `disc_start_step`,
`decoder_finetune_steps`) are steps (int) or strings such as "2 epochs" /
"50000 examples".
"""

import ml_collections
from ml_collections.config_dict import placeholder

from maskgit_jax import data as data_lib
from maskgit_jax.train_lib import sharding

# The model fields a config exposes beside `preset`, with their types. A field
# left None takes the preset's value (maskgit_jax.nets.factory), so that
# `--config.transformer.hidden_size=192` or `--config.tokenizer.codebook_size=256`
# overrides one size of a preset from the command line.
TRANSFORMER_FIELDS = (
    ("hidden_size", int), ("num_hidden_layers", int),
    ("num_attention_heads", int), ("intermediate_size", int),
    ("hidden_dropout_prob", float), ("attention_probs_dropout_prob", float),
    ("initializer_range", float), ("dtype", str), ("attention_impl", str))
TOKENIZER_FIELDS = (
    ("filters", int), ("channel_multipliers", tuple), ("num_res_blocks", int),
    ("embedding_dim", int), ("codebook_size", int), ("num_groups", int),
    ("code_dim", int), ("l2_normalized", bool), ("commitment_cost", float),
    # object: `--config.tokenizer.encoder_spatial_levels=None` parses too
    # (configs/folder.py sets 1); factory.tokenizer_from_config checks it.
    ("encoder_spatial_levels", object),
    # "reduce" (None: flax's GroupNorm, the release's) or "matmul"
    # (nets/layers.GroupNorm, the same variables; faster on a CPU).
    ("group_norm", str),
    # "straight_through" (None: the release's estimator) or "rotation"
    # (the rotation trick; nets/quantizer_math.rotation_trick).
    ("quantizer_gradient", str),
    # True: a self-attention block after the decoder's middle blocks (None:
    # False, the release's decoder; nets/layers.SpatialSelfAttention).
    ("decoder_attention", bool))


def duration(value) -> ml_collections.FieldReference:
  """A duration field: an int (steps) or a string ("2 epochs", "50000
  examples"), from a config file or `--config.key=value` alike."""
  return ml_collections.FieldReference(value, field_type=object)


def _section(fields, given):
  values = {name: placeholder(kind) for name, kind in fields}
  values.update(given)
  return ml_collections.ConfigDict(values)


def transformer(preset: str, **given) -> ml_collections.ConfigDict:
  """`config.transformer`: `preset` and the `given` fields (remat,
  scan_layers, any size); every other field of TRANSFORMER_FIELDS is None,
  the preset's value, and settable with `--config.transformer.KEY=VALUE`."""
  return _section(TRANSFORMER_FIELDS, dict(given, preset=preset))


def tokenizer(preset: str, **given) -> ml_collections.ConfigDict:
  """`config.tokenizer`: like `transformer()`, with TOKENIZER_FIELDS (the
  size fields None are filled by `auto_config` when `preset` is "")."""
  return _section(TOKENIZER_FIELDS, dict(given, preset=preset))


def common(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Adds the keys every training config has."""
  config.stages = ("tokenizer", "transformer")
  config.mesh = (-1, 1, 1)  # (data, fsdp, model); -1 = the remaining devices
  # CPU only: 0 = JAX's one device, -1 = one device per core (data parallel
  # over the cores; maskgit_jax/common/cpu_devices.py), N = N devices.
  config.cpu_devices = 0
  config.logical_axis_rules = tuple(
      (name, axes) for name, axes in sharding.DEFAULT_RULES)
  config.tokenizer_checkpoint = ""  # stage 2 from a released tokenizer file
  # Seconds from the process's start that a new run's lengths are scaled to
  # fit on the machine it runs on (train_lib/time_budget.py); None: the
  # step counts as given. Typed object, so that `--config.time_budget_s=None`
  # (a config that sets a budget, such as configs/folder.py, trained at its
  # own step counts) parses as well as a number; time_budget.check checks it.
  config.time_budget_s = ml_collections.FieldReference(None, field_type=object)
  config.data = data_lib.get_config()
  # Evaluators in the training loop (maskgit_jax.evaluation.evaluators):
  # "reconstruction" (stage 1) and "generation" (stage 2) run at the end of
  # their stage and every `every` (a duration; 0 = the end only), FID & co.
  # on `num_samples` generated / `num_real` real images (the samples' classes
  # in the real reference's proportions, or "balanced").
  config.evaluation = ml_collections.ConfigDict(dict(
      enabled=False, num_samples=1000, num_real=1000, num_train=0,
      batch_size=32, seed=0, sample_labels="reference", cache_dir="",
      evaluators=ml_collections.ConfigDict(dict(
          reconstruction=ml_collections.ConfigDict(dict(every=duration(0))),
          generation=ml_collections.ConfigDict(dict(every=duration(0)))))))
  return config


def sampling(num_iter: int = 16, samples_per_class: int = 4,
             grid_scale: int = 1) -> ml_collections.ConfigDict:
  """`config.sampling`: decoding options (the release's inference defaults:
  16 iterations, choice temperature 4.5, cosine schedule) and grid layout.

  `position_scheduler` is "confidence" (the release's) or "halton" (a fixed
  Halton reveal order, `maskgit_jax.libml.parallel_decode`; on the embedded
  default FID 2.10x the floor against 2.07x, README "Measured");
  `halton_random_shift` gives each sample a random cyclic offset of that
  order (Halton only). `sampling_temperature_end` (None:
  constant) makes the token temperature go linearly from
  `sampling_temperature` at the first iteration to it at the last.
  `refine_steps` corrector steps (0: off, the release's sampler) follow the
  last iteration: each re-masks `refine_fraction` of the generated tokens,
  the least confident (Gumbel noise `refine_choice_temperature` on the log
  confidence), and re-samples them given all the others.
  """
  return ml_collections.ConfigDict(dict(
      num_iter=num_iter, choice_temperature=4.5,
      mask_scheduling_method="cosine", guidance_scale=0.0,
      guidance_schedule="constant", sampling_temperature=1.0,
      sampling_temperature_end=ml_collections.FieldReference(None, float),
      top_k=0, position_scheduler="confidence", halton_random_shift=False,
      refine_steps=0, refine_fraction=0.25, refine_choice_temperature=0.0,
      refine_temperature=ml_collections.FieldReference(None, float),
      samples_per_class=samples_per_class, grid_scale=grid_scale))


def _logging(c):
  c.log_every = duration(100)
  c.checkpoint_every = duration(1000)
  c.image_every = duration(1000)
  # Typed object, so that `--config.<section>.keep_checkpoints=None` (keep
  # every checkpoint) parses as well as an int; run.py checks the value.
  c.keep_checkpoints = ml_collections.FieldReference(3, field_type=object)
  c.async_checkpoints = True
  c.tensorboard = True


def tokenizer_training() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.num_steps = duration(1_000_000)
  c.batch_size = 256
  c.g_optimizer = ml_collections.ConfigDict(dict(
      name="adam", lr=1e-4, b1=0.0, b2=0.99, warmup_steps=0,
      lr_schedule="constant", grad_clip_norm=0.0))
  c.d_optimizer = ml_collections.ConfigDict(dict(
      name="adam", lr=1e-4, b1=0.0, b2=0.99, warmup_steps=0,
      lr_schedule="constant", grad_clip_norm=0.0))
  # The last `decoder_finetune_steps` of num_steps train the decoder alone
  # (encoder and codebook frozen: the tokens stop changing) with its own
  # Adam at a constant rate; None (or 0) = off, as released. None in the
  # optimizer: tokenizer_task.DECODER_OPTIMIZER's value. (None, not the
  # value: a run recorded before these fields resumes unchanged.)
  c.decoder_finetune_steps = duration(None)
  c.decoder_optimizer = ml_collections.ConfigDict(dict(
      lr=placeholder(float), b1=placeholder(float), b2=placeholder(float)))
  # In that phase, each token the decoder reads is replaced, with this
  # probability, by one of its `decoder_token_noise_neighbours` nearest codes
  # (None: 8), the loss still against the image: a decoder robust to the near
  # misses of stage 2's samples (train_lib/token_noise). None (or 0) = off.
  # Typed object, as durations are, so that `=None` parses: a run recorded
  # without the noise resumes with the flags its refused resume prints;
  # token_noise.settings checks the values.
  c.decoder_token_noise = ml_collections.FieldReference(None, field_type=object)
  c.decoder_token_noise_neighbours = ml_collections.FieldReference(
      None, field_type=object)
  c.reconstruction_loss = "l2"
  c.perceptual_weight = 0.1
  c.perceptual_weights = ""  # path to FID Inception default_1.pt; "" = off
  # Or a perceptual network of the run's own (train_lib/feature_net_task):
  # a small classifier trained `steps` steps on the labelled training images
  # at the start of stage 1. None = off / 64 images / 1e-3 / (16, 32, 64).
  c.feature_net = ml_collections.ConfigDict(dict(
      steps=placeholder(int), batch_size=placeholder(int),
      lr=placeholder(float), widths=placeholder(tuple)))
  c.gan_loss = "non-saturating"
  c.generator_adversarial_weight = 0.1
  c.r1_cost = 10.0
  c.lecam_weight = 0.0
  c.disc_start_step = duration(0)
  c.ema_decay = 0.999
  c.codebook_restart_threshold = 0.0  # expected uses per step; 0 = off
  c.discriminator = ml_collections.ConfigDict(dict(
      channel_multiplier=1, max_filters=512, blur_resample=True,
      # None: convolutions; True: 3x3 convolutions as patches @ kernel, the
      # same function (tokenizer_task.conv_as_matmul).
      conv_as_matmul=placeholder(bool)))
  _logging(c)
  return c


def transformer_training() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.num_steps = duration(2_000_000)
  c.batch_size = 256
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adamw", lr=1e-4, b1=0.9, b2=0.96, weight_decay=0.045,
      warmup_steps=5000, lr_schedule="cosine", lr_end_factor=0.0,
      grad_clip_norm=1.0))
  c.label_smoothing = 0.1
  c.mask_scheduling_method = "cosine"
  c.min_mask_ratio = 0.0
  c.loss_on_all_tokens = False
  c.class_dropout = 0.0  # > 0 trains the null class for guidance
  # Token ids computed once per record (centre view and mirror image) by the
  # frozen tokenizer instead of on every step (maskgit_jax/data/token_cache).
  c.token_cache = False
  c.ema_decay = 0.0
  c.samples = ml_collections.ConfigDict(dict(
      per_class=4, num_iter=12, choice_temperature=4.5))
  _logging(c)
  return c


def cpu_recipe(config: ml_collections.ConfigDict, *, tokenizer_steps: int,
               transformer_steps: int, save_every: int,
               tokenizer_batch_size: int = 32
               ) -> ml_collections.ConfigDict:
  """The small-CPU recipe that `configs/fashion_mnist.py` measured and
  `configs/folder.py` reuses: stage 1 reconstruction only (no GAN, no
  perceptual loss; l2-normalised codes with dead-code restarts), stage 2 from
  a token cache at learning rate 4e-3 with class dropout for guidance and at
  least half of each grid masked, and
  the sampling of the final grid (guidance 2.0 ramped linearly, token
  temperature 0.8). Sets `tokenizer_training`, `transformer_training` and
  `sampling`; `save_every` is the checkpoint and image period of both."""
  t = config.tokenizer_training = tokenizer_training()
  t.num_steps = tokenizer_steps
  t.batch_size = tokenizer_batch_size
  t.g_optimizer.lr = 3e-3
  t.g_optimizer.b1 = 0.9
  t.g_optimizer.lr_schedule = "cosine"
  t.g_optimizer.warmup_steps = 100
  t.generator_adversarial_weight = 0.0  # no GAN in a short CPU budget
  t.perceptual_weight = 0.0
  t.ema_decay = 0.99
  t.codebook_restart_threshold = 0.1

  m = config.transformer_training = transformer_training()
  m.num_steps = transformer_steps
  m.batch_size = 64
  # The frozen tokenizer's codes computed once (centre crop and mirror
  # image) instead of a tokenizer forward in every step.
  m.token_cache = True
  m.optimizer.lr = 4e-3
  m.optimizer.warmup_steps = 200
  m.optimizer.weight_decay = 0.01
  m.class_dropout = 0.1  # the null class, for classifier-free guidance
  # At least half of every training grid masked, the release config's
  # min_masking_rate: training time goes to the crowded grids where samples
  # take their layout. Measured (README "Measured"), stage 2 retrained on the
  # same tokens: Fashion-MNIST sample FID 1.85x -> 1.72x the floor (0.7:
  # 1.79x), Twemoji folder 3.41x -> 3.27x.
  m.min_mask_ratio = 0.5
  m.samples.per_class = 4
  for section in (t, m):
    section.log_every = 100
    section.checkpoint_every = save_every
    section.image_every = save_every

  config.sampling = sampling(num_iter=12, samples_per_class=8, grid_scale=2)
  # Classifier-free guidance ramped up linearly over the iterations, and
  # tokens drawn from the logits / 0.8: sharper samples, a little diversity
  # traded (measured: README "Measured").
  config.sampling.guidance_scale = 2.0
  config.sampling.guidance_schedule = "linear"
  config.sampling.sampling_temperature = 0.8
  return config


def decoder_gan_phase(config: ml_collections.ConfigDict, *,
                      steps: int) -> ml_collections.ConfigDict:
  """Ends stage 1 with `steps` decoder-only steps against a small
  discriminator, added after the recipe's `num_steps` (which grows by
  `steps`): the encoder and codebook are frozen, so the tokens stage 2
  learns are those of the reconstruction phase, and the GAN only sharpens
  what the decoder draws from them. The adversarial settings measured on
  `configs/fashion_mnist.py` (README "Measured": sample FID 2.04x -> 1.89x
  the floor on the same tokens): non-saturating loss at weight 0.01, no R1,
  a StyleGAN discriminator capped at 16 filters, Adam b1 0.5 for both
  nets (the decoder's: tokenizer_task.DECODER_OPTIMIZER)."""
  t = config.tokenizer_training
  if not isinstance(t.num_steps, int):
    raise ValueError("decoder_gan_phase adds steps to an int num_steps, got "
                     f"{t.num_steps!r}")
  t.disc_start_step = t.num_steps
  t.num_steps = t.num_steps + steps
  t.decoder_finetune_steps = steps
  t.generator_adversarial_weight = 0.01
  t.r1_cost = 0.0
  t.d_optimizer.b1 = 0.5
  t.discriminator.max_filters = 16
  return config
