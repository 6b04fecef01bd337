"""Generation and editing with a tokenizer and transformer pair.

`MaskGitSampler` binds the two models and their variables and compiles one
program per request shape: token decoding (`parallel_decode.decode`) and
detokenization run inside a single `jax.jit`, with the variables passed as
arguments (not baked in as constants).

    sampler = MaskGitSampler(tokenizer, tok_vars, transformer, tr_vars,
                             num_classes=1000)
    images = sampler.generate(labels=[1, 2], rng=jax.random.PRNGKey(0))
    edited = sampler.inpaint(image, editing.Box(64, 64, 96, 96), label=207,
                             rng=jax.random.PRNGKey(1))
"""

import functools
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from maskgit_jax.libml import editing
from maskgit_jax.libml import parallel_decode
from maskgit_jax.nets import maskgit_transformer
from maskgit_jax.nets import vqgan_tokenizer

MASK_TOKEN_ID = -1


class MaskGitSampler:
  """Class-conditional generation, inpainting, outpainting and box editing.

  Attributes:
    tokenizer, transformer: the modules.
    tokenizer_variables, transformer_variables: their variables.
    num_classes: classes of the transformer (vocab = codebook + classes + 1).
    codebook_size: the tokenizer's codebook size.
    latent_size: token grid side of the transformer (seq_len = latent**2 + 1).
    image_size: pixels per side of the transformer's canvas.
    null_class_id: the id used for "no class" (the mask token's embedding row,
      as a non-negative id so that the decoder does not generate it).
  """

  def __init__(self, tokenizer: vqgan_tokenizer.VQVAE, tokenizer_variables: Any,
               transformer: maskgit_transformer.Transformer,
               transformer_variables: Any, num_classes: int):
    self.tokenizer = tokenizer
    self.transformer = transformer
    self.tokenizer_variables = tokenizer_variables
    self.transformer_variables = transformer_variables
    self.num_classes = int(num_classes)
    self.codebook_size = tokenizer.codebook_size
    expected_vocab = self.codebook_size + self.num_classes + 1
    if transformer.vocab_size != expected_vocab:
      raise ValueError(
          f"Transformer vocab_size={transformer.vocab_size} does not equal "
          f"codebook_size + num_classes + 1 = {expected_vocab}.")
    self.latent_size = int(round((transformer.max_position_embeddings - 1)**.5))
    if self.latent_size**2 + 1 != transformer.max_position_embeddings:
      raise ValueError("Transformer max_position_embeddings="
                       f"{transformer.max_position_embeddings} is not a square "
                       "token grid plus one class token.")
    self.patch = tokenizer.downsample_factor
    self.image_size = self.latent_size * self.patch
    self.null_class_id = transformer.vocab_size - 1

  # ----------------------------------------------------------------- tokens
  def class_tokens(self, labels: Optional[Sequence[Optional[int]]],
                   batch: int) -> np.ndarray:
    """int32 `[batch, 1]` class tokens; None means the null class."""
    if labels is None:
      labels = [None] * batch
    out = []
    for label in labels:
      if label is None:
        out.append(self.null_class_id)
        continue
      if not 0 <= int(label) < self.num_classes:
        raise ValueError(f"Class id {label} is out of range [0, "
                         f"{self.num_classes}).")
      out.append(self.codebook_size + int(label))
    return np.asarray(out, np.int32)[:, None]

  def _logits_fn(self, transformer_variables):
    def tokens_to_logits(ids):
      logits = self.transformer.apply(transformer_variables, ids,
                                      deterministic=True)
      return logits[..., :self.codebook_size]
    return tokens_to_logits

  @functools.partial(jax.jit, static_argnums=0,
                     static_argnames=("num_iter", "start_iter",
                                      "mask_scheduling_method", "guidance_scale",
                                      "guidance_schedule", "top_k",
                                      "return_masks", "position_scheduler",
                                      "halton_random_shift", "refine_steps"))
  def _decode_tokens(self, transformer_variables, inputs, rng, *, num_iter,
                     start_iter, choice_temperature, mask_scheduling_method,
                     guidance_scale, guidance_schedule, sampling_temperature,
                     top_k, return_masks, position_scheduler,
                     halton_random_shift, sampling_temperature_end=None,
                     refine_steps=0, refine_fraction=0.25,
                     refine_choice_temperature=0.0, refine_temperature=None):
    # Fast precision mode: the kernels cast once, not in every iteration.
    transformer_variables = maskgit_transformer.cast_kernels(
        transformer_variables, self.transformer.dtype)
    return parallel_decode.decode(
        inputs, rng, self._logits_fn(transformer_variables),
        mask_token_id=MASK_TOKEN_ID, num_iter=num_iter, start_iter=start_iter,
        choice_temperature=choice_temperature,
        mask_scheduling_method=mask_scheduling_method,
        guidance_scale=guidance_scale, guidance_schedule=guidance_schedule,
        null_inputs_fn=functools.partial(
            _set_class_token, class_id=self.null_class_id),
        sampling_temperature=sampling_temperature,
        sampling_temperature_end=sampling_temperature_end, top_k=top_k,
        return_masks=return_masks, position_scheduler=position_scheduler,
        halton_random_shift=halton_random_shift,
        grid_shape=(self.latent_size, self.latent_size),
        refine_steps=refine_steps, refine_fraction=refine_fraction,
        refine_choice_temperature=refine_choice_temperature,
        refine_temperature=refine_temperature)

  def decode_tokens(self, inputs, rng, *, num_iter: int = 12,
                    start_iter: int = 0, choice_temperature: float = 4.5,
                    mask_scheduling_method: str = "cosine",
                    guidance_scale: float = 0.0,
                    guidance_schedule: str = "constant",
                    sampling_temperature: float = 1.0, top_k: int = 0,
                    sampling_temperature_end: Optional[float] = None,
                    return_masks: bool = False,
                    position_scheduler: str = "confidence",
                    halton_random_shift: bool = False,
                    refine_steps: int = 0, refine_fraction: float = 0.25,
                    refine_choice_temperature: float = 0.0,
                    refine_temperature: Optional[float] = None):
    """Runs `parallel_decode.decode` on `[batch, seq_len]` inputs (jitted).

    `position_scheduler="halton"` reveals the latent grid in Halton order
    (see `parallel_decode`); the class token at position 0 is given.
    `refine_steps` > 0 adds corrector steps after the last iteration (see
    `parallel_decode`).
    """
    return self._decode_tokens(
        self.transformer_variables, jnp.asarray(inputs, jnp.int32), rng,
        num_iter=num_iter, start_iter=start_iter,
        choice_temperature=float(choice_temperature),
        mask_scheduling_method=mask_scheduling_method,
        guidance_scale=float(guidance_scale),
        guidance_schedule=guidance_schedule,
        sampling_temperature=float(sampling_temperature),
        sampling_temperature_end=(None if sampling_temperature_end is None
                                  else float(sampling_temperature_end)),
        top_k=int(top_k), return_masks=return_masks,
        position_scheduler=str(position_scheduler),
        halton_random_shift=bool(halton_random_shift),
        refine_steps=int(refine_steps), refine_fraction=float(refine_fraction),
        refine_choice_temperature=float(refine_choice_temperature),
        refine_temperature=(None if refine_temperature is None
                            else float(refine_temperature)))

  @functools.partial(jax.jit, static_argnums=0)
  def _detokenize(self, tokenizer_variables, ids):
    images = self.tokenizer.apply(tokenizer_variables, ids,
                                  method=self.tokenizer.decode_from_indices)
    return jnp.clip(images, 0., 1.)

  def detokenize(self, ids) -> np.ndarray:
    """Token grids `[b, h, w]` -> images `[b, h*patch, w*patch, C]` in [0, 1]."""
    return np.asarray(self._detokenize(self.tokenizer_variables,
                                       jnp.asarray(ids, jnp.int32)))

  @functools.partial(jax.jit, static_argnums=0)
  def _tokenize(self, tokenizer_variables, images):
    return self.tokenizer.apply(tokenizer_variables, images,
                                method=self.tokenizer.encode_to_indices)

  def tokenize(self, images) -> np.ndarray:
    """Images `[b, H, W, C]` in [0, 1] -> int32 token grids `[b, h, w]`."""
    images = np.asarray(images, np.float32)
    if images.ndim == 3:
      images = images[None]
    return np.asarray(self._tokenize(self.tokenizer_variables, images))

  # ------------------------------------------------------------- generation
  def generation_inputs(self, labels: Sequence[Optional[int]]) -> np.ndarray:
    """int32 `[b, seq_len]`: each label's class token, then all masked."""
    labels = list(labels)
    return np.concatenate([
        self.class_tokens(labels, len(labels)),
        np.full((len(labels), self.latent_size**2), MASK_TOKEN_ID, np.int32)
    ], axis=1)

  def generate_tokens(self, labels: Sequence[Optional[int]], rng, **kwargs):
    """Class-conditional token grids `[b, latent, latent]` (last iteration).

    With `return_masks=True` returns `(seqs [b, T, seq_len], masks)` instead,
    the whole decoding history. Other keyword arguments go to `decode`.
    """
    out = self.decode_tokens(self.generation_inputs(labels), rng, **kwargs)
    if kwargs.get("return_masks"):
      return out
    return self._grid(out[:, -1])

  def _grid(self, seqs) -> np.ndarray:
    return np.asarray(seqs)[:, 1:].reshape(-1, self.latent_size,
                                           self.latent_size)

  def generate(self, labels: Sequence[Optional[int]], rng, **kwargs):
    """Class-conditional images `[b, H, W, C]` in [0, 1] (None = null class)."""
    return self.detokenize(self.generate_tokens(labels, rng, **kwargs))

  def decoding_history(self, labels: Sequence[Optional[int]], rng, **kwargs):
    """Images of the canvas after each iteration.

    Returns `[b, T, H, W, C]`: at iteration t the tokens kept so far are drawn
    and masked tokens are shown as mid grey, the way the paper's figure shows
    decoding progress; the last entry is the final sample.
    """
    seqs, masks = self.generate_tokens(labels, rng, return_masks=True, **kwargs)
    seqs, masks = np.asarray(seqs)[:, :, 1:], np.array(masks)[:, :, 1:]
    b, t, n = seqs.shape
    images = self.detokenize(seqs.reshape(b * t, self.latent_size,
                                          self.latent_size))
    hidden = masks.reshape(b * t, self.latent_size, self.latent_size)
    hidden[t - 1::t] = False  # the last iteration's output is complete.
    pixel_mask = np.kron(hidden, np.ones((self.patch, self.patch)))[..., None]
    images = np.where(pixel_mask > 0, 0.5, images)
    return images.reshape((b, t) + images.shape[1:])

  # ---------------------------------------------------------------- editing
  def _check_image(self, image) -> np.ndarray:
    image = np.asarray(image, np.float32)
    channels = self.tokenizer.channels
    want = (self.image_size, self.image_size, channels)
    if image.shape != want:
      raise ValueError(f"Image of shape {image.shape}; the models need {want} "
                       "(resize it first).")
    return image

  def edit(self, image, latent_mask, label: Optional[int], rng, *,
           start_iter: int = 2, num_iter: int = 12,
           choice_temperature: float = 4.5, blur_radius: Optional[int] = None,
           num_samples: int = 1, **kwargs) -> np.ndarray:
    """Regenerates the tokens under `latent_mask` and composites the result.

    Args:
      image: `[H, W, C]` in [0, 1] at the models' size.
      latent_mask: `[latent, latent]`, 1 = regenerate.
      label: class to generate (None = null class).
      rng: PRNG key.
      start_iter, num_iter, choice_temperature: the release's editing
        defaults (2, 12, 4.5).
      blur_radius: compositing blur (default: the release's).
      num_samples: number of variations.

    Returns:
      `[num_samples, H, W, C]`; where the blurred mask is 0 the pixels are
      the input's.
    """
    image = self._check_image(image)
    latent_mask = np.asarray(latent_mask) > 0
    tokens = self.tokenize(image)[0]
    masked = np.where(latent_mask, MASK_TOKEN_ID, tokens).reshape(1, -1)
    inputs = np.concatenate([self.class_tokens([label], 1), masked], axis=1)
    inputs = np.repeat(inputs, num_samples, axis=0)
    seqs = self.decode_tokens(inputs, rng, start_iter=start_iter,
                              num_iter=num_iter,
                              choice_temperature=choice_temperature, **kwargs)
    generated = self.detokenize(self._grid(seqs[:, -1]))
    return editing.composite(image[None], generated,
                             latent_mask.astype(np.float32), blur_radius)

  def inpaint(self, image, region, label: Optional[int], rng, **kwargs):
    """Inpaints a `editing.Box` or a pixel mask `[H, W]` (nonzero = fill)."""
    if isinstance(region, editing.Box):
      latent_mask = editing.latent_mask_from_box(region, self.image_size,
                                                 self.latent_size)
    else:
      region = np.asarray(region)
      if region.shape[:2] != (self.image_size, self.image_size):
        raise ValueError(f"Mask of shape {region.shape}; the image is "
                         f"{self.image_size}x{self.image_size}.")
      if not np.any(region):
        raise ValueError("The inpainting mask is empty.")
      latent_mask = editing.latent_mask_from_pixels(region, self.latent_size)
    return self.edit(image, latent_mask, label, rng, **kwargs)

  def edit_box(self, image, box: editing.Box, label: int, rng, **kwargs):
    """The release demo's class-conditional box editing: the box is
    regenerated as class `label` (start_iter=2, num_iter=12)."""
    return self.inpaint(image, box, label, rng, **kwargs)

  def outpaint(self, image, rng, *, label: Optional[int] = None,
               left: int = 0, right: int = 0, up: int = 0, down: int = 0,
               num_iter: int = 12, choice_temperature: float = 4.5,
               blur_radius: Optional[int] = None, **kwargs) -> np.ndarray:
    """Extends the canvas by whole tokens in any direction.

    Extents are pixels, rounded up to whole tokens. The new area is filled by
    windows of the transformer's size, each conditioned on the tokens already
    known inside it (`editing.outpaint_windows`). Returns one image
    `[H + up + down, W + left + right, C]` (rounded extents); the original
    area is composited back like an inpainting.
    """
    image = self._check_image(image)
    p, n = self.patch, self.latent_size
    l, r, u, d = (editing.pixels_to_tokens(v, p) for v in (left, right, up, down))
    if not any((l, r, u, d)):
      raise ValueError("Outpainting needs a positive left, right, up or down.")
    canvas = np.full((n + u + d, n + l + r), MASK_TOKEN_ID, np.int32)
    canvas[u:u + n, l:l + n] = self.tokenize(image)[0]
    known = canvas != MASK_TOKEN_ID
    class_token = self.class_tokens([label], 1)
    keys = iter(jax.random.split(rng, canvas.size))
    for y, x in editing.outpaint_windows(known.copy(), n):
      window = canvas[y:y + n, x:x + n].reshape(1, -1)
      inputs = np.concatenate([class_token, window], axis=1)
      seqs = self.decode_tokens(inputs, next(keys), num_iter=num_iter,
                                choice_temperature=choice_temperature, **kwargs)
      canvas[y:y + n, x:x + n] = np.asarray(seqs[0, -1, 1:]).reshape(n, n)
    generated = self.detokenize(canvas[None])[0]
    original = np.zeros_like(generated)
    original[u * p:(u + n) * p, l * p:(l + n) * p] = image
    return editing.composite(original, generated, (~known).astype(np.float32),
                             blur_radius)


def _set_class_token(ids, class_id):
  return ids.at[:, 0].set(class_id)
