"""Stage 1: the VQGAN tokenizer, with the release's GAN recipe.

Generator loss = reconstruction (L2 or L1) + VQ losses (commitment, codebook,
entropy) + `perceptual_weight` x perceptual loss (the run's own feature
network, `feature_net_task`, or an FID-Inception weights file named by
`perceptual_weights`; off with a logged note otherwise: nothing is
downloaded) + `generator_adversarial_weight` x GAN loss (from
`disc_start_step`). Discriminator loss = non-saturating or hinge + R1 penalty
(`r1_cost`) + optional LeCAM (`lecam_weight`). Adam for both, EMA of the
generator, and optional dead-code restarts: codes whose usage average falls
below `codebook_restart_threshold` (expected uses per step) are set to random
encoder outputs of the current batch.

Decoder fine-tuning (`decoder_finetune_steps` > 0): the last that many of
`num_steps` (none if that is all of them: a logged note) train the decoder
alone, with its own optimizer (`decoder_optimizer`); the encoder, the
quantizer and the codebook stay as they are, so the tokens no longer change,
and no code is restarted. The other steps' learning-rate schedule
(`g_optimizer`) runs over the steps before. With `disc_start_step` at the
phase's first step, the GAN loss sharpens the decoder without touching the
tokens (README "Measured"). With `decoder_token_noise` > 0 the phase's
decoder reads noisy tokens: each swapped with that probability for one of
its `decoder_token_noise_neighbours` nearest codes
(`token_noise.perturb_tokens`), the loss still against the image, which
makes it robust to stage 2's near misses (the latent perturbation of Qiu
et al., "Robust Latent Matters", arXiv 2503.08354, here in the decoder-only
phase only).

The step's phase (GAN on or not, decoder-only or not) is a static argument
of the trainer's step (`Task.phase`), one compiled step per phase; called
without it, the step reads the phase from `state.step` with `lax.cond`s.
"""

import functools
import logging
from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from maskgit_jax.libml import losses
from maskgit_jax.nets import discriminator as discriminator_lib
from maskgit_jax.nets import vqgan_tokenizer
from maskgit_jax.train_lib import data_parallel
from maskgit_jax.train_lib import optim
from maskgit_jax.train_lib import token_noise as token_noise_lib
from maskgit_jax.train_lib import trainer


def perceptual_loss_fn(weights_path: Optional[str], note=logging.info):
  """A `(x, y) -> loss` on FID-Inception pool features, or None without weights.

  The features of both images (resized to 299 inside the network, no
  quantisation so gradients flow) are l2-normalised; the loss is their mean
  squared distance.
  """
  if not weights_path:
    note("perceptual loss off: no feature-network weights given "
         "(perceptual_weights). The one network it takes is the FID "
         "Inception: a run whose quality is measured by FID must not train "
         "against it.")
    return None
  from maskgit_jax.nets import inception  # pylint: disable=import-outside-toplevel
  from maskgit_jax.nets import inception_weights  # pylint: disable=import-outside-toplevel
  params = inception_weights.load_params(weights_path)
  net = inception.FIDInceptionV3(quantize=False)

  def loss(x, y):
    if x.shape[-1] == 1:
      x, y = (jnp.repeat(v, 3, axis=-1) for v in (x, y))
    fx = net.apply({"params": params}, x)
    fy = net.apply({"params": params}, y)
    fx = fx / (jnp.linalg.norm(fx, axis=-1, keepdims=True) + 1e-8)
    fy = fy / (jnp.linalg.norm(fy, axis=-1, keepdims=True) + 1e-8)
    return jnp.mean(jnp.sum(jnp.square(fx - fy), -1))
  return loss


# `decoder_optimizer`'s values where the config leaves None.
DECODER_OPTIMIZER = dict(lr=1e-4, b1=0.5, b2=0.99)


def decoder_optimizer_config(c: ml_collections.ConfigDict
                             ) -> ml_collections.ConfigDict:
  """The decoder-only phase's optimizer: Adam at a constant learning rate,
  `c.decoder_optimizer`'s lr / b1 / b2, DECODER_OPTIMIZER's where None."""
  given = c.get("decoder_optimizer") or {}
  values = {k: given.get(k) if given.get(k) is not None else v
            for k, v in DECODER_OPTIMIZER.items()}
  return ml_collections.ConfigDict(dict(
      name="adam", warmup_steps=0, lr_schedule="constant",
      grad_clip_norm=0.0, **values))


def conv_as_matmul(value: Optional[bool]) -> bool:
  """`discriminator.conv_as_matmul`; None (the default) is the convolution
  form on every backend. The two are the same function with the same
  variables. The matmul form was the CPU default while the GAN step ran
  inside a `lax.cond` branch, where XLA:CPU takes a slow path for the
  convolutions' gradients; compiled for its phase (the trainer) and with
  the slice-based blur, the convolutions are the faster form on a CPU too:
  the release recipe's GAN step at 64x64 (batch 2, one device) 3.3 s
  against 17.3 s, the demo's shapes with R1 0.17 s against 2.0 s
  (`benchmarks/stage1_phases.py`, README "Measured")."""
  return bool(value)


def make_task(c: ml_collections.ConfigDict, tokenizer: vqgan_tokenizer.VQVAE,
              image_size: int, note=logging.info,
              perceptual=None) -> trainer.Task:
  """The stage-1 `Task` for config section `c` (= `config.tokenizer_training`).

  `perceptual`: a frozen `(recon, images) -> scalar` perceptual distance
  (`feature_net_task.load_or_train`); None reads `c.perceptual_weights`."""
  # A resolved duration (run.resolve_durations refuses a negative one).
  ft_steps = int(c.get("decoder_finetune_steps", 0) or 0)
  if ft_steps >= c.num_steps:  # e.g. a shortened try of the demo's config
    note(f"tokenizer_training.decoder_finetune_steps={ft_steps} is not below "
         f"num_steps={c.num_steps}: no decoder-only phase in this run.")
    ft_steps = 0
  ft_start = c.num_steps - ft_steps  # the decoder-only phase's first step
  g_tx, g_schedule = optim.make_optimizer(c.g_optimizer, ft_start)
  if ft_steps:
    ft_tx, ft_schedule = optim.make_optimizer(decoder_optimizer_config(c),
                                              ft_steps)
  use_gan = float(c.generator_adversarial_weight) > 0
  disc = discriminator_lib.Discriminator(
      channel_multiplier=c.discriminator.channel_multiplier,
      max_filters=c.discriminator.max_filters,
      blur_resample=c.discriminator.blur_resample,
      conv_as_matmul=conv_as_matmul(c.discriminator.get("conv_as_matmul")))
  d_tx, _ = optim.make_optimizer(c.d_optimizer, c.num_steps)
  if perceptual is None:
    perceptual = perceptual_loss_fn(c.get("perceptual_weights", ""), note)
  token_noise, neighbours = token_noise_lib.settings(
      c, tokenizer.codebook_size)
  ema_decay = float(c.get("ema_decay", 0.0))
  restart = float(c.get("codebook_restart_threshold", 0.0))
  # A batch-level entropy term is not a mean of per-example terms: its
  # gradient cannot be taken per shard (data_parallel).
  additive = not tokenizer.entropy_loss_ratio
  images0 = jnp.zeros((1, image_size, image_size, tokenizer.channels))
  losses.reconstruction_loss(images0, images0, c.reconstruction_loss)
  losses.generator_loss(jnp.zeros((1,)), c.gan_loss)  # validates the names

  def init(rng):
    g_rng, d_rng, state_rng = jax.random.split(rng, 3)
    params = tokenizer.init(g_rng, images0, method=lambda m, x: m.decode(
        m.encode(x)[0]))["params"]
    aux = {"usage": jnp.full((tokenizer.codebook_size,), 1.0, jnp.float32)}
    if use_gan:
      d_params = disc.init(d_rng, images0)["params"]
      aux.update(d_params=d_params, d_opt_state=d_tx.init(d_params),
                 lecam=jnp.zeros((2,), jnp.float32))
    if ft_steps:
      aux["decoder_opt_state"] = ft_tx.init(params["decoder"])
    return trainer.TrainState(
        step=jnp.zeros((), jnp.int32), params=params,
        opt_state=g_tx.init(params), rng=state_rng,
        ema_params=params if ema_decay else None, aux=aux)

  def restart_dead_codes(params, opt_state, ema_params, usage, features, rng):
    """Replaces codes with usage below the threshold by random features.

    A restarted entry also drops its Adam moments (they belonged to the old
    entry) and its EMA copy jumps to the new value: stage 2 tokenises with
    the EMA codebook, which would otherwise only drift toward it."""
    flat = features.reshape(-1, features.shape[-1])
    picks = jax.random.randint(rng, (tokenizer.codebook_size,), 0,
                               flat.shape[0])
    dead = usage < restart
    codebook = params["quantizer"]["codebook"]
    new = jnp.where(dead[:, None], flat[picks].astype(codebook.dtype), codebook)
    params = {**params, "quantizer": {**params["quantizer"], "codebook": new}}
    path = ("quantizer", "codebook")
    opt_state = optim.reset_rows(opt_state, path, dead)
    if ema_params is not None:
      ema_params = optim.reset_rows(ema_params, path, dead, new)
    usage = jnp.where(dead, 1.0, usage)
    return params, opt_state, ema_params, usage, jnp.sum(dead)

  def discriminator_update(d_aux, images, fake):
    """One discriminator step (loss, R1, LeCAM): new d_aux and metrics."""
    d_params = d_aux["d_params"]

    def d_loss_fn(dp, images, fake):
      d_fn = lambda x: disc.apply({"params": dp}, x)  # noqa: E731
      real_logit, fake_logit = d_fn(images), d_fn(fake)
      d_loss = losses.discriminator_loss(real_logit, fake_logit, c.gan_loss)
      r1 = losses.r1_penalty(d_fn, images) if c.r1_cost else jnp.zeros(())
      total = d_loss + c.r1_cost * r1
      lecam = jnp.zeros(())
      if c.lecam_weight:
        lecam = losses.lecam_regularizer(real_logit, fake_logit,
                                         d_aux["lecam"][0], d_aux["lecam"][1])
        total += c.lecam_weight * lecam
      return total, (d_loss, r1, lecam, jnp.mean(real_logit),
                     jnp.mean(fake_logit))

    (d_total, (d_loss, r1, lecam, real_mean, fake_mean)), d_grads = (
        data_parallel.value_and_grad(d_loss_fn, d_params, images, fake))
    d_updates, d_opt_state = d_tx.update(d_grads, d_aux["d_opt_state"],
                                         d_params)
    new = dict(d_params=optax.apply_updates(d_params, d_updates),
               d_opt_state=d_opt_state,
               lecam=0.99 * d_aux["lecam"] + 0.01 * jnp.stack(
                   [real_mean, fake_mean]))
    metrics = dict(discriminator_loss=d_loss, r1_penalty=r1,
                   lecam_loss=lecam, d_total_loss=d_total)
    return new, jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), metrics)

  def discriminator_idle(d_aux, images, fake):
    """Before disc_start_step: nothing runs; the same structures."""
    del images, fake
    zero = jnp.zeros((), jnp.float32)
    return dict(d_aux), dict(discriminator_loss=zero, r1_penalty=zero,
                             lecam_loss=zero, d_total_loss=zero)

  def phase(step: int):
    """The step's phase, `(GAN on, decoder-only)`: Python bools the trainer
    compiles one step for each (`Task.phase`). Convolutions inside a
    `lax.cond` branch run several times slower on XLA:CPU (the decoder-only
    update 629 ms against 85 ms for a whole reconstruction step, one
    device, `configs/fashion_mnist.py`), so the phases are static there."""
    return (bool(use_gan and step >= c.disc_start_step),
            bool(ft_steps and step >= ft_start))

  def train_step(state, batch, frozen, static_phase=None):
    """One step; `static_phase` from `phase(step)`, or None: the phase is
    read from `state.step` inside the step (`lax.cond`s)."""
    del frozen
    images = batch["image"]
    rng = jax.random.fold_in(state.rng, state.step)
    restart_rng, noise_rng = jax.random.split(rng)
    if static_phase is None:
      gan_on = (state.step >= c.disc_start_step) if use_gan else False
      ft_on = (state.step >= ft_start) if ft_steps else False
    else:
      gan_on, ft_on = static_phase
    d_params = state.aux.get("d_params")

    def g_loss_fn(trainable, fixed, x, noisy_ids=None):
      """The generator loss of images `x` and its aux `(recon, ids,
      features, parts)`: a mean over the examples (`data_parallel`). With
      `noisy_ids` (the decoder-only phase's noisy tokens of `x`) the decoder
      draws those; the encoder's terms are then constants that
      `update_decoder` adds."""
      params = {**fixed, **trainable}
      if noisy_ids is not None:
        recon = tokenizer.apply({"params": params}, noisy_ids,
                                method=tokenizer.decode_from_indices)
        ids = features = None
        total = jnp.zeros((), jnp.float32)
        parts = {}
      else:
        recon, result = tokenizer.apply({"params": params}, x, train=True)
        ids, features = result["encoding_indices"], result["code_features"]
        total = result["quantizer_loss"]
        parts = {k: result[k] for k in ("quantizer_loss", "entropy_loss")}
      rec = losses.reconstruction_loss(recon, x, c.reconstruction_loss)
      total += rec
      parts["reconstruction_loss"] = rec
      if perceptual is not None:
        p = perceptual(recon, x)
        total += c.perceptual_weight * p
        parts["perceptual_loss"] = p
      if use_gan:
        # Before disc_start_step the discriminator is not run at all.
        g_adv = _select(
            gan_on, lambda r: losses.generator_loss(
                disc.apply({"params": d_params}, r), c.gan_loss),
            lambda r: jnp.zeros((), jnp.float32), recon)
        total += c.generator_adversarial_weight * g_adv
        parts["generator_adversarial_loss"] = g_adv
      return total, (recon, ids, features, parts)

    def update_all(params, opt_state, ft_opt_state):
      (loss, out), grads = data_parallel.value_and_grad(
          lambda p, x: g_loss_fn(p, {}, x), params, images,
          additive=additive)
      updates, opt_state = g_tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state, ft_opt_state,
              loss, out, optax.tree.norm(grads), g_schedule(state.step))

    def update_decoder(params, opt_state, ft_opt_state):
      """The decoder-only phase: the rest is a constant of the step."""
      fixed = {k: jax.lax.stop_gradient(v) for k, v in params.items()
               if k != "decoder"}
      trainable = {"decoder": params["decoder"]}
      if token_noise:
        # The tokens, and their noise drawn for the whole batch, outside
        # the loss (data_parallel: no randomness inside it).
        _, result = tokenizer.apply({"params": {**fixed, **trainable}},
                                    images, train=True,
                                    method=tokenizer.encode)
        ids = result["encoding_indices"]
        noisy = token_noise_lib.perturb_tokens(
            fixed["quantizer"]["codebook"], ids, noise_rng, token_noise,
            neighbours, tokenizer.l2_normalized)
        (loss, (recon, _, _, parts)), grads = data_parallel.value_and_grad(
            lambda p, x, n: g_loss_fn(p, fixed, x, n), trainable, images,
            noisy)
        # The encoder's terms, constants of this phase.
        loss += result["quantizer_loss"]
        parts = {**parts, "quantizer_loss": result["quantizer_loss"],
                 "entropy_loss": result["entropy_loss"]}
        out = (recon, ids, result["code_features"], parts)
      else:
        (loss, out), grads = data_parallel.value_and_grad(
            lambda p, x: g_loss_fn(p, fixed, x), trainable, images,
            additive=additive)
      updates, ft_opt_state = ft_tx.update(grads["decoder"], ft_opt_state,
                                           params["decoder"])
      params = {**params,
                "decoder": optax.apply_updates(params["decoder"], updates)}
      return (params, opt_state, ft_opt_state, loss, out,
              optax.tree.norm(grads), ft_schedule(state.step - ft_start))

    aux = dict(state.aux)
    (params, opt_state, ft_opt_state, loss, (recon, ids, features, parts),
     grad_norm, lr) = _select(ft_on, update_decoder, update_all, state.params,
                              state.opt_state, aux.get("decoder_opt_state"))
    if ft_steps:
      aux["decoder_opt_state"] = ft_opt_state
    counts = jnp.bincount(ids.reshape(-1), length=tokenizer.codebook_size)
    expected = ids.size / tokenizer.codebook_size
    usage = 0.99 * state.aux["usage"] + 0.01 * counts / expected
    metrics = dict(loss=loss, g_learning_rate=lr, grad_norm=grad_norm,
                   psnr=_psnr(recon, images), **parts,
                   **vqgan_tokenizer.codebook_stats(ids,
                                                    tokenizer.codebook_size))
    ema_params = (optim.ema_update(state.ema_params, params, ema_decay)
                  if ema_decay else None)
    if restart:
      features = jax.lax.stop_gradient(features)
      restart_args = (params, opt_state, ema_params, usage, features,
                      restart_rng)
      # The codebook is frozen in the decoder-only phase.
      params, opt_state, ema_params, usage, num_dead = _select(
          ft_on, lambda p, o, e, u, f, r: (p, o, e, u, jnp.zeros(
              (), jnp.int32)), restart_dead_codes, *restart_args)
      metrics["restarted_codes"] = num_dead.astype(jnp.float32)
    aux["usage"] = usage
    if ft_steps:
      metrics["decoder_finetune"] = jnp.asarray(ft_on, jnp.float32)

    if use_gan:
      d_aux, d_metrics = _select(
          gan_on, discriminator_update, discriminator_idle,
          {k: state.aux[k] for k in ("d_params", "d_opt_state", "lecam")},
          images, jax.lax.stop_gradient(recon))
      aux.update(d_aux)
      metrics.update(d_metrics, gan_active=jnp.asarray(gan_on, jnp.float32))

    new_state = state.replace(
        step=state.step + 1, params=params, opt_state=opt_state, aux=aux,
        ema_params=ema_params)
    return new_state, metrics

  def images(params, batch, frozen):
    del frozen
    x = np.asarray(batch["image"])[:8]
    recon = _reconstruct(tokenizer, params, x)
    return {"reconstructions": (np.stack([x, np.clip(recon, 0, 1)]),
                                ["input", "reconstruction"])}

  return trainer.Task(name="tokenizer", num_steps=c.num_steps, init=init,
                      train_step=train_step, images=images, phase=phase)


def _select(flag, if_true, if_false, *args):
  """`if_true(*args)` or `if_false(*args)`: chosen here for a Python bool
  (one branch traced), by `lax.cond` for a traced one."""
  if isinstance(flag, bool):
    return (if_true if flag else if_false)(*args)
  return jax.lax.cond(flag, if_true, if_false, *args)


@functools.partial(jax.jit, static_argnums=0)
def _reconstruct_jit(tokenizer, params, x):
  return tokenizer.apply({"params": params}, x)[0]


def _reconstruct(tokenizer, params, x):
  return np.asarray(_reconstruct_jit(tokenizer, params, x))


def _psnr(x, y):
  mse = jnp.mean(jnp.square(jnp.clip(x, 0, 1) - y))
  return -10. * jnp.log10(jnp.maximum(mse, 1e-10))

