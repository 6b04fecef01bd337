"""MaskGIT on any folder of images: classes, colour and model sizes derived.

Launch:
  python -m maskgit_jax.train --config=configs/folder.py \
      --config.data.path=DIR --workdir=RUN [--config.image_size=64]

DIR holds one sub-folder per class (labels: the sorted folder names) or only
images (unconditional: one class named after the folder); JPEG, PNG, WebP,
BMP, GIF, TIFF in any mode and size. At train start
(`maskgit_jax.train_lib.auto_config`) the fields left None here are derived:
`num_classes` and `class_names` from the sub-folders, `tokenizer.channels`
from the image modes (3 unless every image is grey), and the tokenizer's
sizes from `image_size` (8x8 tokens at 16, 32, 64 and 128 pixels). The
resolved values are written to RUN/config.json; `python -m
maskgit_jax.sample --workdir=RUN` and `evaluate` read them from there. Set
any of them explicitly to override; a value that contradicts the folder
(e.g. num_classes=10 for 9 class folders, channels=1 for colour images)
stops the run before training with one `error:` line naming both.

Expected cost on a 2-core CPU: on the development sets (1,906 emoji, 9
classes) at image_size=32, now (stage 1 by Muon, 3500 + 500 steps) 19 min 6
s of training and 1.42 GB on Twemoji on a 2-core Zen 2 AMD EPYC (float32
peak about 190 GFLOP/s; stage 1 6.6 steps/s, stage 2 in float32 at 4.7),
against 19 min 23 s with the 4000 + 500 Adam steps before. Earlier: 17 min 13 s - 17 min 21 s of training wall on a
2-core AMD EPYC whose float32 matmul peak is about 200 GFLOP/s (stage 1 4000
steps of 16 images at about 9 steps/s, then 500 decoder-only steps, token
cache seconds, stage 2 2500 steps of 64 at about 4.5), peak resident
1.27-1.38 GB; `evaluate` at N=900
about 4 more minutes; with the faster stage-1 step of 2026-12-06 (README
"Speed and cost"), 17 min 13 s and 1.43 GB on Twemoji on a 2-core
AVX-512/AMX Xeon (stage 1 400 s, stage 2 at 4.0 steps/s); since stage 2
runs as the demo's (no dropout, bfloat16; 2026-12-06), 16 min 43 s on a
day the same Xeon ran about a fifth slower (stage 2 at 5.0 steps/s, 21 min
40 s before the change that day), peak RSS 1.38 GB; on a 2-core Zen 2 AMD
EPYC without bfloat16 dot products (float32 peak about 190 GFLOP/s), stage
2 in float32 by dtype "auto": 19 min 46 s on Noto, 1.39 GB. image_size=64 (one more 2x downsampling level, 16
base filters) costs about 1.8x the stage-1 step and 1.5x the stage-2 step
(measured on one device with an earlier recipe).
Quality (README "Train on your own images"; N=900, sample FID / the
real-vs-real floor, k-NN class accuracy / real's): Twemoji 2.95x / 0.77,
Noto 2.58x / 0.80 (targets 2x / 0.9: not met); reconstruction FID 1.83x and
1.62x. The decoder-only phase with noisy tokens (0.6 of the 8 nearest
codes, no GAN), on the same seeds against the recipe without it: Twemoji
rFID 1.92x -> 1.83x, samples 2.99x -> 2.95x, class accuracy 0.77 -> 0.77;
Noto 1.68x -> 1.62x, 2.59x -> 2.58x, 0.80 -> 0.80 (the samples' change is
within seed noise). Stage 2 masks at least half
of each grid (`transformer_training.min_mask_ratio=0.5`, from the shared
recipe). Sampling: guidance 3.0, ramped linearly (the demo's 2.0 on the
same weights: Twemoji 3.00x / 0.75, Noto 2.58x / 0.76; with sampling seed
1, 3.0 against 2.0: 3.05x / 0.78 against 3.04x / 0.76, 2.65x / 0.78
against 2.63x / 0.79: a small gain at the edge of seed noise; 4.0: 3.00x /
0.79, 2.62x / 0.81), token temperature 0.8, choice temperature 4.5. Measured and
not kept: stage 1 for 6000 steps (Noto 2.50x / 0.81, Twemoji 3.00x / 0.80,
20 min of training here), stage 2 for 3200 (Noto 2.61x / 0.79).
Models: tokenizer 0.42M parameters at 32, 0.43M at 64 (512 l2-normalised
16-d codes, 8x8 tokens; 0.60M / 0.62M with the release's encoder);
transformer "small" (4 layers, hidden 128).
The encoder keeps 3x3 kernels only at full resolution
(`tokenizer.encoder_spatial_levels=1`; 1x1 after the first downsampling), so
each token describes its own patch and a margin rather than most of the
image; stage 1 trains in steps of 16 images (the demo's lever, more and
smaller steps: 4000 of 16 instead of 2000 of 32 in the same wall time, now
3500 Muon steps). End to end on
the two colour sets (N=900), the release's encoder with 2000 steps of 32 ->
local tokens -> local tokens with 4000 steps of 16 (now): Twemoji sample FID
3.36x -> 3.08x -> 3.00x the floor, class accuracy 0.69 -> 0.68 -> 0.75;
Noto 2.93x -> 2.87x -> 2.58x, 0.74 -> 0.74 -> 0.76.
`--config.tokenizer.encoder_spatial_levels=None` gives the release's encoder
(what runs recorded before this default used, and need to resume, with
`--config.tokenizer_training.batch_size=32
--config.tokenizer_training.num_steps=2000`).
"""
import ml_collections
from ml_collections.config_dict import placeholder

from maskgit_jax.train_lib import defaults


def get_config():
  config = defaults.common(ml_collections.ConfigDict())
  config.seed = 42
  config.cpu_devices = -1  # one device per core (data parallel) on a CPU
  config.image_size = 32
  # Derived from the folder when None (see the docstring).
  config.num_classes = placeholder(int)
  config.class_names = placeholder(tuple)
  config.data.source = "folder"  # data.path: required (--config.data.path)

  # The sizes (None) come from auto_config.TOKENIZER_SIZES[image_size], or
  # from a preset when `preset` is set ("small", "imagenet", ...).
  config.tokenizer = defaults.tokenizer(
      "", channels=placeholder(int), entropy_loss_ratio=0.0, remat="none",
      group_norm="matmul")  # as the demo's (configs/fashion_mnist.py)
  # Local tokens: 3x3 kernels only at full resolution (see the docstring).
  config.tokenizer.encoder_spatial_levels = 1
  # The preset's sizes; any of them can be set (--config.transformer.KEY).
  # As the demo's stage 2: no dropout, bfloat16 compute (float32 parameters
  # and accumulation) where the hardware multiplies bfloat16 natively, else
  # float32 (dtype "auto": maskgit_jax/common/precision.py). On the Twemoji
  # set the same samples (2.88x / 0.76 against 2.87x-2.91x / 0.76) in 0.77x
  # the training wall (the stage-2 step 180 against 302 ms on the
  # AVX-512/AMX Xeon; dropout alone is 0.30 of it); on Noto, one stage 1
  # and three stage 2s, 2.66x / 0.75 with dropout in float32, 2.66x / 0.75
  # without in bfloat16, 2.70x / 0.76 without in float32; README "Train on
  # your own images".
  config.transformer = defaults.transformer(
      "small", remat="none", scan_layers=False, hidden_dropout_prob=0.0,
      attention_probs_dropout_prob=0.0, dtype="auto")

  # The Fashion-MNIST demo's recipe (configs/fashion_mnist.py, measured
  # there), with its own step counts; stage 1 in steps of 16 images, as the
  # demo's (4000 of 16 took the same wall time as 2000 of 32 and, with the
  # local tokens, improved both colour sets: see the docstring).
  defaults.cpu_recipe(config, tokenizer_steps=3500, tokenizer_batch_size=16,
                      transformer_steps=2500, save_every=500)
  # The reconstruction steps by Muon, as the demo's (configs/fashion_mnist.py;
  # train_lib/optim.py): 3500 Muon steps take the wall time of 4000 Adam
  # steps here (the step 1.11x as long). On Twemoji (README "Train on your
  # own images", N=900): reconstruction FID 1.82x -> 1.57x the floor (PSNR
  # 24.58 -> 25.38 dB), samples 2.90x -> 2.67x, class accuracy 0.72 -> 0.78
  # of real; 19 min 6 s of training on the Zen 2 EPYC (19 min 23 s before).
  config.tokenizer_training.g_optimizer.name = "muon"
  # Then 500 decoder-only steps (4000 in all) reading noisy tokens, as the
  # demo's phase but without its GAN: each token swapped, with probability
  # 0.6, for one of its 8 nearest codes (README "Train on your own images":
  # on both colour sets reconstruction FID 1.92x -> 1.83x and 1.68x ->
  # 1.62x, samples 2.99x -> 2.95x and 2.59x -> 2.58x, class accuracy the
  # same; about 40 s more training).
  t = config.tokenizer_training
  t.decoder_finetune_steps = 500
  t.num_steps = t.num_steps + 500
  t.decoder_token_noise = 0.6
  t.decoder_token_noise_neighbours = 8
  # Stronger guidance than the demo's 2.0 (README "Train on your own
  # images": +0.02 class accuracy, +0.01x FID on average over two sets and
  # two sampling seeds; small, at the edge of seed noise).
  config.sampling.guidance_scale = 3.0
  # What `python -m maskgit_jax.evaluate --workdir=RUN` checks the run
  # against (at N=1000 or more; README "Train on your own images").
  config.quality_targets = ml_collections.ConfigDict(dict(
      fid_over_floor=2.0, class_accuracy_over_real=0.9))
  # The run fits in 19 minutes of the machine it runs on (the target is
  # 20): a new run scales the step counts above to the speed it measures
  # (train_lib/time_budget.py, README "Train on your own images"; at these
  # counts 19 min 6 s on a 2-core Zen 2 EPYC, 25 or more on a slower 2-core
  # machine). --config.time_budget_s=None trains them as given.
  config.time_budget_s = 1140.0
  return config
