"""Stage 2: the masked-token transformer on tokens of a frozen tokenizer.

Each step: images -> token ids with the frozen tokenizer (on the fly, or
read from the token cache when `token_cache` is on: batches then carry
`tokens` [b, L] instead of `image`) ->
class token at position 0 (replaced by the null class with probability
`class_dropout`, for classifier-free guidance) -> an exact number of tokens per
example masked, the count drawn from the mask schedule -> cross-entropy with
label smoothing on the masked tokens (or on all, `loss_on_all_tokens`) ->
AdamW (no decay on biases, norms, embeddings), warm-up plus cosine decay,
gradient clipping -> optional EMA.
"""

from typing import Any, Dict

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from maskgit_jax.libml import losses
from maskgit_jax.libml import mask_schedule
from maskgit_jax.libml import sampling
from maskgit_jax.nets import maskgit_transformer
from maskgit_jax.nets import vqgan_tokenizer
from maskgit_jax.train_lib import optim
from maskgit_jax.train_lib import trainer



def make_task(c: ml_collections.ConfigDict,
              tokenizer: vqgan_tokenizer.VQVAE, tokenizer_variables: Any,
              transformer: maskgit_transformer.Transformer, num_classes: int,
              class_names=()) -> trainer.Task:
  """The stage-2 `Task` for config section `c` (= `config.transformer_training`)."""
  tx, schedule = optim.make_optimizer(c.optimizer, c.num_steps)
  codebook_size = tokenizer.codebook_size
  seq_len = transformer.max_position_embeddings
  mask_scheduling_method = c.mask_scheduling_method
  mask_schedule.validate(mask_scheduling_method)
  ema_decay = float(c.get("ema_decay", 0.0))

  def init(rng):
    init_rng, state_rng = jax.random.split(rng)
    params = transformer.init(init_rng, jnp.zeros((1, seq_len), jnp.int32))
    params = params["params"]
    return trainer.TrainState(
        step=jnp.zeros((), jnp.int32), params=params,
        opt_state=tx.init(params), rng=state_rng,
        ema_params=params if ema_decay else None)

  def tokens_of(images, frozen):
    ids = tokenizer.apply(frozen, images, method=tokenizer.encode_to_indices)
    return jax.lax.stop_gradient(ids.reshape(ids.shape[0], -1))

  def train_step(state, batch, frozen):
    rng = jax.random.fold_in(state.rng, state.step)
    mask_rng, drop_rng, dropout_rng = jax.random.split(rng, 3)
    if "tokens" in batch:  # From the token cache (data/token_cache.py).
      ids = batch["tokens"].astype(jnp.int32)
    else:
      ids = tokens_of(batch["image"], frozen)
    b, n = ids.shape
    mask, num_masked = mask_schedule.random_training_mask(
        mask_rng, b, n, mask_scheduling_method, c.get("min_mask_ratio", 0.0))
    class_tokens = codebook_size + batch["label"].astype(jnp.int32)
    if c.class_dropout:
      drop = jax.random.bernoulli(drop_rng, c.class_dropout, (b,))
      class_tokens = jnp.where(drop, sampling.MASK_TOKEN_ID, class_tokens)
    masked = jnp.where(mask, sampling.MASK_TOKEN_ID, ids)
    inputs = jnp.concatenate([class_tokens[:, None], masked], axis=1)
    weights = jnp.ones_like(mask, jnp.float32) if c.loss_on_all_tokens else (
        mask.astype(jnp.float32))

    def loss_fn(params):
      logits = transformer.apply({"params": params}, inputs,
                                 deterministic=False,
                                 rngs={"dropout": dropout_rng},
                                 image_logits=codebook_size)
      loss = losses.smoothed_cross_entropy(logits, ids, weights,
                                           c.label_smoothing)
      return loss, logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    correct = (jnp.argmax(logits, -1) == ids).astype(jnp.float32)
    masked = mask.astype(jnp.float32)
    metrics = dict(
        loss=loss, learning_rate=schedule(state.step),
        grad_norm=optax.tree.norm(grads),
        masked_accuracy=jnp.sum(correct * masked) / jnp.sum(masked),
        mask_ratio=jnp.mean(num_masked / n))
    new_state = state.replace(
        step=state.step + 1, params=params, opt_state=opt_state,
        ema_params=(optim.ema_update(state.ema_params, params, ema_decay)
                    if ema_decay else None))
    return new_state, metrics

  sample_cfg = c.get("samples", ml_collections.ConfigDict())
  holder: Dict[str, sampling.MaskGitSampler] = {}

  def images(params, batch, frozen):
    del batch
    if "sampler" not in holder:
      holder["sampler"] = sampling.MaskGitSampler(
          tokenizer, frozen, transformer, {"params": params},
          num_classes=num_classes)
    sampler = holder["sampler"]
    sampler.transformer_variables = {"params": params}
    classes = list(range(min(num_classes, 10)))
    per_class = int(sample_cfg.get("per_class", 4))
    labels = [k for k in classes for _ in range(per_class)]
    out = sampler.generate(labels, jax.random.PRNGKey(0),
                           num_iter=int(sample_cfg.get("num_iter", 12)),
                           choice_temperature=float(
                               sample_cfg.get("choice_temperature", 4.5)))
    grid = out.reshape((len(classes), per_class) + out.shape[1:])
    names = [f"{k} {class_names[k]}" if k < len(class_names) else str(k)
             for k in classes]
    return {"samples": (np.asarray(grid), names)}

  keys = ("tokens", "label") if c.get("token_cache", False) else (
      "image", "label")
  return trainer.Task(name="transformer", num_steps=c.num_steps, init=init,
                      train_step=train_step, frozen=tokenizer_variables,
                      images=images, batch_keys=keys)
