"""The embedded default: MaskGIT on Fashion-MNIST (28x28 grey, 7x7 tokens).

Launch (what `make demo` runs):
  python -m maskgit_jax.train --config=configs/fashion_mnist.py \
      --workdir=runs/fashion_mnist --config.time_budget_s=SECONDS

`make demo` gives SECONDS = what is left of 870 s from make's start (its
set-up included): a new run scales the step counts below to what fits in
them on the machine it runs on (train_lib/time_budget.py, README
"Training"); without the flag it trains them as given (14 min 36 s on a
2-core Zen 2 AMD EPYC with set-up, 19 min 51 s on a slower 2-core Zen 3
one, where `make demo` trains 0.56x of them).

Trains the tokenizer (stage 1), then the transformer on its tokens (stage 2),
into one workdir, and ends by writing WORKDIR/samples.png: one labelled row of
class-conditional samples per class. Re-running the command resumes; a
finished run only rewrites the grid.
Expected cost: about 13-15 minutes wall and 1.5 GB RAM on a 2-core CPU
(`make demo` from a fresh clone, set-up included: 14 min 36 s and 1.59 GB
on a 2-core Zen 2 AMD EPYC with stage 1 by Muon, 2026-12-07, `5394500`;
its `make eval`: sample FID 1.61x the real-vs-real floor, reconstruction
FID 1.198x, class accuracy 1.06 of real's, usage 100%; with 4,500 Muon
steps, `4d88f57`: 14 min 29 s, 1.64x, 1.24x; 14 min 48 s with Adam and the
encoder below; before it: 12 min 37 s on a 2-core AVX-512
Xeon, since the stage-1 step averages its gradients in one all-reduce and
the tokenizer's GroupNorm sums by matrix-vector products; 14 min 1 s to 15
min 36 s there before; README "Measured"). The recipe is cut to the 15-minute budget (2026-12-06): 6,000 reconstruction
steps, 1,000 decoder-only steps, 2,500 stage-2 steps in bfloat16 (sample
FID 1.74x the real-vs-real floor at N=1000, reconstruction FID 1.30x;
with 4,800 reconstruction steps 1.82x and 1.36x; with training seed 43
1.83x and 1.51x). Since then the quantizer's commitment cost is 0.05
instead of the release's 0.25 (README "Measured", "The commitment cost"):
at 0.25 the seeds fall into one of two regimes in the first 1,000 steps,
one with the features pressed onto near-identical codes and tokens that
stage 2 learns badly; at 0.05 both seeds land in the other, with stage
2's final loss 4.48 / 4.54 instead of 4.70 / 4.87 and sample FID 1.72x /
1.74x instead of 1.74x / 1.83x (reconstruction FID 1.34x / 1.41x, 0.6 dB
less PSNR; 0.1 gave 1.73x / 1.79x and 1.28x / 1.36x). `make demo` from a
fresh clone with 0.05 (`e79baeb`, the Xeon): 11 min 31 s, 1.52 GB; its
`make eval`: sample FID 1.72x, reconstruction FID 1.34x, class accuracy
1.05 of real's, codebook usage 100%. `configs/fashion_mnist_long.py` is the same recipe at its
longer length (11,000 + 3,000 stage-1 steps, 4,000 float32 stage-2
steps: about 27 minutes on the Zen 2, samples 1.51x and reconstructions
1.11x the floor), which trained the shipped checkpoint
(checkpoints/fashion_mnist).
Models: tokenizer "small" with 1x1 kernels at 7x7 (321k parameters, 512
l2-normalised 16-d codes; see get_config),
transformer "small" (4 layers, hidden 128, no dropout in this short run).
Images: the data set's own 28x28 pixels (`data.pad=False`), 7x7 tokens of
4x4 pixels: no capacity and no time spent on a padded black border (the
stage-1 step 0.76x and the stage-2 step 0.74x the time at 32x32 with 8x8
tokens, `benchmarks/train_step.py` in one session).
Recipe (README "Measured"): stage 1 is first reconstruction only, its
weight matrices updated by Muon since 2026-12-07 (5,000 steps; see
get_config), then the decoder-only phase below (the GAN
from the start buys far fewer steps in the same time, see the ablation),
in steps of 16 images (7300 of 16 against 3600 of 32 took the same wall
time and gave reconstruction FID 1.37x the floor against 1.53x; L1 instead
of L2 gave 1.77x); more reconstruction steps buy better tokens, and the
tokens bound the samples (7300 -> 11000 steps: reconstruction FID 1.30x ->
1.22x, sample FID 1.74x -> 1.64x). Then decoder-only steps against a
small discriminator (`decoder_finetune_steps`; the tokens are frozen: on
the shipped tokens and transformer 1500 such steps took sample FID from
2.04x to 1.89x the floor, the same steps without the GAN loss 2.04x), in
which the decoder reads noisy tokens (`decoder_token_noise=0.6`: each token
swapped with probability 0.6 for one of its 8 nearest codes; sample FID
1.66x -> 1.60x on the same tokens and transformer, reconstruction FID
unchanged; 0.3 of 8: 1.62x; 0.9 of 8: 1.60x; 0.3 of 128: 1.68x).
Stage 2 reads the frozen tokenizer's codes from a token cache (computed
once: centre view and mirror image) with the paper's ceiling mask count,
learning rate 4e-3 (1000-step runs on the same tokens: final loss 4.89 at
1e-3, 4.75 at 2e-3, 4.67 at 4e-3), and at least half of each grid masked
(`min_mask_ratio=0.5`, the release config's min_masking_rate: retrained on
the shipped tokens, sample FID 1.85x -> 1.72x the floor, recall 0.36 ->
0.44; 0.7 gave 1.79x); in bfloat16 (float32 parameters and accumulation:
on the same tokens sample FID 1.580x / 1.607x on two sampling seeds
against float32's 1.609x / 1.593x, and the step 1.14x-1.22x faster on
CPUs with bf16 dot products) where the hardware has them, else float32
(`transformer.dtype="auto"`, `maskgit_jax/common/precision.py`: on an AVX2
CPU without them the bfloat16 step is 1.49x the float32 one). 2,500
steps rather than 2,000 (on this recipe's tokens: sample FID 1.79x ->
1.75x). On a CPU the train steps run data parallel
over one JAX device per core (`cpu_devices=-1`), which made the stage-1
step 0.65x and the stage-2 step 0.87x as long as on one device.
Sampling: token temperature from 1.1 at the first iteration down to 0.5 at
the last (against a constant 0.8 on the same weights, N=1000: FID 2.07x ->
2.01x and 2.07x -> 2.02x on two sampling seeds; recall up 0.03-0.07;
0.5 -> 1.1 was worse, 2.21x; README "Measured"); guidance 2.0 (1.0 on the
same weights: FID 2.61x -> 2.68x, class accuracy 1.01 -> 0.95 of real);
choice temperature 15 (the release's 4.5 on the shipped weights, two
sampling seeds: FID 2.34x / 2.34x -> 2.23x / 2.22x, recall 0.23 / 0.20 ->
0.28 / 0.33, class accuracy 1.15 -> 1.09 of real).
"""
import ml_collections

from maskgit_jax.train_lib import defaults

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
               "Shirt", "Sneaker", "Bag", "Ankle boot")


def get_config():
  return recipe(reconstruction_steps=5000, decoder_steps=1000,
                transformer_steps=2500, transformer_dtype="auto")


def recipe(*, reconstruction_steps: int, decoder_steps: int,
           transformer_steps: int, transformer_dtype=None):
  """The embedded default's config at the given lengths: stage 1
  `reconstruction_steps` then `decoder_steps` decoder-only steps, stage 2
  `transformer_steps` steps computing in `transformer_dtype` (None: the
  preset's float32)."""
  config = defaults.common(ml_collections.ConfigDict())
  config.seed = 42
  config.cpu_devices = -1  # one device per core (data parallel) on a CPU
  config.image_size = 28
  config.num_classes = 10
  config.class_names = CLASS_NAMES
  config.data.source = "fashion_mnist"
  config.data.random_crop = False  # the garments are centred; flips only
  config.data.pad = False  # the 28x28 pixels as they are: 7x7 tokens

  # No entropy loss: with l2-normalised codes and dead-code restarts every
  # code is used anyway, and the entropy term cost ~4 dB PSNR in the budget.
  # The presets' other fields are None here (the preset's value) and can be
  # set with --config.tokenizer.KEY / --config.transformer.KEY.
  config.tokenizer = defaults.tokenizer(
      "small", channels=1, entropy_loss_ratio=0.0, remat="none",
      # The GroupNorm statistics as matrix-vector products: flax's values
      # to float rounding, the stage-1 step ~6% faster on a CPU (README
      # "Speed and cost").
      group_norm="matmul")
  # The quantizer pulls the features onto their codes at 0.05 rather than
  # the release's 0.25: at 0.25 training seeds fall into one of two regimes
  # early on, one with features pressed onto near-identical codes whose
  # tokens stage 2 learns badly (README "Measured", "The commitment cost").
  config.tokenizer.commitment_cost = 0.05
  config.transformer = defaults.transformer(
      "small", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
      remat="none", scan_layers=False)
  if transformer_dtype is not None:
    config.transformer.dtype = transformer_dtype

  # The encoder's residual blocks with 3x3 kernels at 28x28 and 14x14 only,
  # 1x1 at 7x7 and in the middle blocks (the release's encoder: 3x3 at every
  # level). Measured on this recipe at N=1000 (README "Measured"): seed 42
  # reconstruction FID 1.36x -> 1.29x, samples 1.74x -> 1.69x; seed 43
  # 1.41x -> 1.38x, 1.74x -> 1.73x; class accuracy 1.07 / 1.06 of real;
  # stage 1 34 s shorter (0.32M tokenizer parameters, not 0.44M).
  # A demo run recorded before (2026-12-07) resumes with
  # --config.tokenizer.encoder_spatial_levels=None.
  config.tokenizer.encoder_spatial_levels = 2

  # Measured in the README's "Measured" (see the docstring).
  defaults.cpu_recipe(config, tokenizer_steps=reconstruction_steps,
                      tokenizer_batch_size=16,
                      transformer_steps=transformer_steps, save_every=1000)
  # Stage 1's reconstruction steps by Muon (its weight matrices: the
  # convolution kernels; Adam for the codebook, biases and norms; the
  # update scaled to Adam's RMS, so the same learning rate;
  # train_lib/optim.py): it reaches Adam's 6,000-step reconstruction loss in
  # about 3,400 steps, each about 1.2x as long. Measured at equal stage-1
  # wall time (README "Measured", "Muon for stage 1"): 5,000 Muon steps
  # against 6,000 Adam steps, reconstruction FID 1.29x -> 1.22x the floor,
  # samples 1.69x -> 1.60x. 4,500 steps until the Newton-Schulz iterations
  # were split between the two cores (train_lib/muon.py: the step 0.91x as
  # long), 5,000 since, in the same 15 minutes.
  config.tokenizer_training.g_optimizer.name = "muon"
  # Then steps that train the decoder alone against a small discriminator
  # (the tokens are those of the last reconstruction step): the GAN
  # sharpens what the decoder draws without changing what stage 2 learns
  # (README "Measured": see the docstring).
  defaults.decoder_gan_phase(config, steps=decoder_steps)
  t = config.tokenizer_training
  # In that phase the decoder reads noisy tokens: each replaced, with
  # probability 0.6, by one of its 8 nearest codes, the loss still against
  # the image, so that it also draws a garment from the near misses of stage
  # 2's samples (README "Measured": on the same tokens and transformer,
  # sample FID 1.661x -> 1.602x the floor, reconstruction FID 1.204x ->
  # 1.203x).
  t.decoder_token_noise = 0.6
  t.decoder_token_noise_neighbours = 8
  # Convolutions, now the default on every backend; kept explicit so that
  # a run recorded with this value resumes.
  t.discriminator.conv_as_matmul = False
  # More randomness in which tokens each iteration keeps: more diverse
  # samples at 7x7 tokens (README "Measured": 9 and 15 alike, 2 worse).
  config.sampling.choice_temperature = 15.0
  # Hot early iterations (the layout), cold late ones (the details): README
  # "Measured", the token temperature schedules.
  config.sampling.sampling_temperature = 1.1
  config.sampling.sampling_temperature_end = 0.5
  # What `make eval` (N=1000) checks this run against (README "Measured").
  config.quality_targets = ml_collections.ConfigDict(dict(
      rfid_over_floor=1.2, fid_over_floor=1.5, class_accuracy_over_real=1.0,
      codebook_usage=0.9))
  return config
