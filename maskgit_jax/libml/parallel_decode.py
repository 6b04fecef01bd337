"""Parallel iterative decoding (MaskGIT's sampler), as one jit-compiled program.

`decode` has the released signature and semantics: starting from a sequence in
which some tokens equal `mask_token_id`, each iteration predicts every masked
token in parallel, samples them, keeps the most confident ones and re-masks
the rest, following the mask schedule. With its defaults it returns exactly
the tokens of the released `maskgit.libml.parallel_decode.decode` for the same
`rng` and `tokens_to_logits` (same key splitting, same sort-based cut-off and
the same tie rule: a token is re-masked if its confidence is *strictly* below
the cut-off).

The loop is a `jax.lax.fori_loop` over static shapes; the whole of `decode` is
`jax.jit`-compiled with `tokens_to_logits` and the options static, so repeated
calls with the same shapes and the same function object compile once. A
`tokens_to_logits` that closes over large parameters bakes them into the
program as constants; to pass parameters as arguments, call `decode` inside
your own `jax.jit` (see `maskgit_jax.libml.sampling`).

Extensions, all off by default:
- classifier-free guidance: `guidance_scale` s > 0 evaluates the model on the
  conditional input and on `null_inputs_fn(input)` (default: the class token
  at position 0 replaced by the mask token) and samples from
  `cond + s_t * (cond - uncond)`, with `s_t = s * w(t)` where `w` is
  `guidance_schedule`: "constant" (1), "linear" ((t+1)/T) or "cosine"
  (1 - cosine mask ratio at t).
- `sampling_temperature` divides the logits before sampling; with
  `sampling_temperature_end` the temperature goes linearly from the first to
  the second over the iterations (`t_start + (t_end - t_start) * t / (T-1)`
  at iteration t of T): hot early iterations, which lay out the image, and
  cold late ones, which fill in its details. `top_k` > 0 keeps only the k
  best logits per position. The confidence is the probability of
  the sampled token under the distribution it was drawn from.
- position scheduler: `position_scheduler="halton"` replaces the choice of
  the tokens to keep (by confidence) with a fixed reveal order over the token
  grid (Besnier et al., "Halton Scheduler for Masked Generative Image
  Transformer", ICLR 2025); see below.
- fast precision: pass a bfloat16 model (see `Transformer.dtype`); here the
  logits are cast to float32, so softmax, confidence and sampling always run
  in float32.
- corrector steps: `refine_steps` R > 0 continues after the last iteration,
  whose tokens are never revisited otherwise (see below).

The Halton position scheduler (`position_scheduler="halton"`): see
`maskgit_jax.libml.halton`; the tokens revealed at each iteration are the
next masked ones of its order, as many as the confidence scheduler's
formula leaves masked (`num_masked_after`).

Corrector steps (`refine_steps` > 0; the re-masking refinement of
Mask-Predict, Ghazvininejad et al., EMNLP 2019, without a learned critic):
the confidence of each generated token is the probability it had when it
was last sampled (given tokens: infinite). Each step re-masks
`floor(refine_fraction * generated)` tokens (at least 1), the least
confident (`refine_choice_temperature` > 0 adds Gumbel noise to the log
confidence; large values choose at random, a Gibbs-like sweep), predicts
them from all the others at the full guidance scale, re-samples them at
`refine_temperature` (None: the last iteration's token temperature) and
records their new confidence. The iterations' entries of the output are
those of the sampler without correction for the same key; the last entry
holds the corrected sequence. Each step costs one model call (two with
guidance).
"""

import functools
import math
from typing import Callable, Optional, Tuple

import jax
import jax.numpy as jnp

from maskgit_jax.libml import halton as halton_lib
from maskgit_jax.libml import mask_schedule

_CONFIDENCE_OF_KNOWN_TOKENS = jnp.inf
GUIDANCE_SCHEDULES = ("constant", "linear", "cosine")
POSITION_SCHEDULERS = ("confidence", "halton")


def mask_by_random_topk(rng: jax.Array, mask_len: jax.Array, probs: jax.Array,
                        temperature: float = 1.0) -> jax.Array:
  """Marks the `mask_len` least confident tokens, with Gumbel noise.

  confidence = log(probs) + temperature * Gumbel noise; the cut-off is the
  `mask_len`-th smallest confidence, and tokens strictly below it are masked
  (so ties at the cut-off mask fewer than `mask_len`, as in the release).

  Args:
    rng: PRNG key.
    mask_len: `[batch, 1]` number of tokens to mask.
    probs: `[batch, seq_len]` probability of each sampled token (inf for
      tokens that are given).
    temperature: scale of the noise.

  Returns:
    bool `[batch, seq_len]`, True where the token is masked again.
  """
  confidence = jnp.log(probs) + temperature * jax.random.gumbel(
      rng, probs.shape)
  sorted_confidence = jnp.sort(confidence, axis=-1)
  cut_off = jnp.take_along_axis(
      sorted_confidence, mask_len.astype(jnp.int32), axis=-1)
  return confidence < cut_off


def drop_class_token(ids: jax.Array, mask_token_id: int = -1) -> jax.Array:
  """The unconditional input for guidance: position 0 set to the mask token."""
  return ids.at[:, 0].set(mask_token_id)


def num_masked_after(step, num_iter, unknown_at_start, unknown_now,
                     method="cosine"):
  """The release's count of tokens left masked after iteration `step`.

  `max(1, min(unknown_now - 1, floor(unknown_at_start * schedule((step+1)/T))))`.
  """
  ratio = 1. * (step + 1) / num_iter
  mask_ratio = mask_schedule.schedule(ratio, unknown_at_start, method)
  mask_len = jnp.floor(unknown_at_start * mask_ratio)
  return jnp.maximum(1, jnp.minimum(unknown_now - 1, mask_len))


def guidance_weight(schedule: str, ratio):
  """Multiplier of the guidance scale at progress `ratio = (t+1)/T`."""
  if schedule == "constant":
    return 1.0
  if schedule == "linear":
    return ratio
  return 1.0 - jax.lax.cos(math.pi / 2. * ratio)  # cosine


def sampling_temperature_at(step, num_iter: int, start, end=None):
  """Token temperature of iteration `step` of `num_iter`: `start`, or with an
  `end`, `start + (end - start) * step / (num_iter - 1)` (`start` when
  `num_iter` is 1)."""
  if end is None:
    return start  # Dividing by the default 1.0 is exact.
  return start + (end - start) * (step / max(num_iter - 1, 1))




def _filter_top_k(logits: jax.Array, k: int) -> jax.Array:
  kth = jax.lax.top_k(logits, k)[0][..., -1:]
  return jnp.where(logits < kth, -jnp.inf, logits)

def _categorical(rng: jax.Array, logits: jax.Array) -> jax.Array:
  """`jax.random.categorical(rng, logits)` (the same draws: Gumbel noise and
  the first maximum), with the argmax written as max + min over indices,
  which XLA:CPU runs about 3x faster than its argmax reduction; at small
  shapes that reduction cost a third of a transformer forward per
  iteration. Differs only for NaN logits. `[..., vocab]` -> `[...]` int32."""
  x = logits + jax.random.gumbel(rng, logits.shape, logits.dtype)
  top = jnp.max(x, axis=-1, keepdims=True)
  index = jax.lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)
  return jnp.min(jnp.where(x == top, index, x.shape[-1]), axis=-1)


@functools.partial(
    jax.jit,
    static_argnames=("tokens_to_logits", "mask_token_id", "num_iter",
                     "start_iter", "mask_scheduling_method", "guidance_schedule",
                     "null_inputs_fn", "top_k", "return_masks",
                     "guidance_scale", "position_scheduler",
                     "halton_random_shift", "grid_shape", "refine_steps"))
def decode(inputs: jax.Array,
           rng: jax.Array,
           tokens_to_logits: Callable[[jax.Array], jax.Array],
           mask_token_id: int = -1,
           num_iter: int = 12,
           start_iter: int = 0,
           choice_temperature: float = 1.0,
           mask_scheduling_method: str = "cosine",
           *,
           guidance_scale: float = 0.0,
           guidance_schedule: str = "constant",
           null_inputs_fn: Optional[Callable[[jax.Array], jax.Array]] = None,
           sampling_temperature: float = 1.0,
           sampling_temperature_end: Optional[float] = None,
           top_k: int = 0,
           return_masks: bool = False,
           position_scheduler: str = "confidence",
           halton_random_shift: bool = False,
           grid_shape: Optional[Tuple[int, int]] = None,
           refine_steps: int = 0,
           refine_fraction: float = 0.25,
           refine_choice_temperature: float = 0.0,
           refine_temperature: Optional[float] = None):
  """Iterative parallel decoding.

  Args:
    inputs: int32 `[batch, seq_len]`; tokens equal to `mask_token_id` are
      generated, all others are kept.
    rng: PRNG key (a raw `uint32[2]` key as in the release, or a typed key).
    tokens_to_logits: `[batch, seq_len]` ids -> `[batch, seq_len, vocab]`
      logits. Must be hashable (it is a static argument of the jit).
    mask_token_id: the mask token id.
    num_iter: number of iterations T.
    start_iter: first iteration to run (editing starts later in the schedule).
    choice_temperature: scale of the Gumbel noise in the choice of tokens to
      keep, annealed as `choice_temperature * (1 - (t+1)/T)`.
    mask_scheduling_method: see `mask_schedule.schedule`.
    guidance_scale: classifier-free guidance scale (0 = off); static, so each
      distinct value compiles once.
    guidance_schedule: "constant", "linear" or "cosine".
    null_inputs_fn: maps inputs to unconditional inputs (default
      `drop_class_token`).
    sampling_temperature: temperature of token sampling (at the first
      iteration when `sampling_temperature_end` is given).
    sampling_temperature_end: temperature at the last iteration, reached
      linearly from `sampling_temperature` (None: constant).
    top_k: sample among the k most likely tokens only (0 = all).
    return_masks: also return the masks after each iteration.
    position_scheduler: which masked tokens to keep at each iteration:
      "confidence" (the release's: the most confident, with Gumbel noise) or
      "halton" (the next ones of a fixed Halton order over the grid; see the
      module docstring).
    halton_random_shift: "halton" only: a random cyclic offset of the order
      per sample.
    grid_shape: "halton" only: `(h, w)` of the token grid, the last `h * w`
      positions (default: inferred from `seq_len`, see `halton.grid_layout`).
    refine_steps: corrector steps after the last iteration (0 = off; static):
      see the module docstring.
    refine_fraction: share of the generated tokens re-masked and re-sampled
      in each corrector step.
    refine_choice_temperature: Gumbel noise on the log confidence when
      choosing them (0: the least confident; large: uniformly at random).
    refine_temperature: token temperature of the corrector steps (None: the
      last iteration's).

  Returns:
    int32 `[batch, num_iter, seq_len]`: the sampled sequence of each iteration
    (entries before `start_iter` equal `inputs`; the last one holds no mask
    token, and is the corrected sequence when `refine_steps` > 0). With
    `return_masks`, also bool `[batch, num_iter, seq_len]`: True
    where a token is masked after that iteration.
  """
  mask_schedule.validate(mask_scheduling_method)
  if guidance_schedule not in GUIDANCE_SCHEDULES:
    raise ValueError(f"Unknown guidance schedule {guidance_schedule!r}; "
                     f"expected one of {GUIDANCE_SCHEDULES}.")
  if not 0 <= start_iter <= num_iter:
    raise ValueError(f"start_iter={start_iter} must be in [0, num_iter={num_iter}].")
  if top_k < 0:
    raise ValueError(f"top_k must be >= 0, got {top_k}.")
  if refine_steps < 0:
    raise ValueError(f"refine_steps must be >= 0, got {refine_steps}.")
  if position_scheduler not in POSITION_SCHEDULERS:
    raise ValueError(f"Unknown position scheduler {position_scheduler!r}; "
                     f"expected one of {POSITION_SCHEDULERS}.")
  halton = position_scheduler == "halton"
  if halton_random_shift and not halton:
    raise ValueError("halton_random_shift needs position_scheduler='halton'.")
  use_guidance = guidance_scale != 0
  null_inputs_fn = null_inputs_fn or functools.partial(
      drop_class_token, mask_token_id=mask_token_id)

  inputs = inputs.astype(jnp.int32)
  unknown_at_start = jnp.sum(inputs == mask_token_id, axis=-1)
  final_seqs = jnp.tile(inputs[:, None, :], (1, num_iter, 1))
  masks = jnp.zeros(final_seqs.shape, bool)
  if halton:
    unknown_at_start_map = inputs == mask_token_id
    shift_rng = None
    if halton_random_shift:
      rng, shift_rng = jax.random.split(rng)
    reveal_rank = halton_lib.reveal_ranks(unknown_at_start_map, shift_rng,
                                          grid_shape, halton_random_shift)

  refine = refine_steps > 0

  def guided_logits(ids, ratio, temperature):
    if use_guidance:
      both = tokens_to_logits(
          jnp.concatenate([ids, null_inputs_fn(ids)], axis=0))
      cond, uncond = jnp.split(both.astype(jnp.float32), 2, axis=0)
      scale = guidance_scale * guidance_weight(guidance_schedule, ratio)
      logits = cond + scale * (cond - uncond)
    else:
      logits = tokens_to_logits(ids).astype(jnp.float32)
    if top_k:
      logits = _filter_top_k(logits, top_k)
    return logits / temperature

  def probability_of(logits, ids):
    probs = jax.nn.softmax(logits, axis=-1)
    return jnp.take_along_axis(probs, ids[..., None].astype(jnp.int32),
                               -1)[..., 0]

  def body(step, state):
    cur_ids, rng, final_seqs, masks, kept_confidence = state
    ratio = 1. * (step + 1) / num_iter
    logits = guided_logits(cur_ids, ratio, sampling_temperature_at(
        step, num_iter, sampling_temperature, sampling_temperature_end))

    rng, sample_rng = jax.random.split(rng, 2)
    sampled_ids = _categorical(sample_rng, logits)
    unknown_map = cur_ids == mask_token_id
    sampled_ids = jnp.where(unknown_map, sampled_ids, cur_ids)
    final_seqs = jax.lax.dynamic_update_slice(
        final_seqs, sampled_ids[:, None, :], (0, step, 0))

    mask_len = num_masked_after(
        step, num_iter, unknown_at_start,
        jnp.sum(unknown_map, axis=-1), mask_scheduling_method)[:, None]
    if not halton or refine:
      selected_probs = jnp.where(unknown_map,
                                 probability_of(logits, sampled_ids),
                                 _CONFIDENCE_OF_KNOWN_TOKENS)
    if halton:
      # The first `unknown_at_start - mask_len` masked positions of the order
      # are revealed; given positions are never masked.
      revealed = unknown_at_start[:, None] - mask_len
      masking = unknown_at_start_map & (reveal_rank >= revealed)
    else:
      rng, choice_rng = jax.random.split(rng)
      masking = mask_by_random_topk(choice_rng, mask_len, selected_probs,
                                    choice_temperature * (1. - ratio))
    if refine:  # The confidence of each generated token when last sampled.
      kept_confidence = jnp.where(unknown_map, selected_probs, kept_confidence)
    masks = jax.lax.dynamic_update_slice(masks, masking[:, None, :], (0, step, 0))
    cur_ids = jnp.where(masking, mask_token_id, sampled_ids)
    return cur_ids, rng, final_seqs, masks, kept_confidence

  # Carried through the loop only for the corrector (None: no loop state).
  kept_confidence = jnp.where(inputs == mask_token_id, 0.,
                              _CONFIDENCE_OF_KNOWN_TOKENS) if refine else None
  _, rng, final_seqs, masks, kept_confidence = jax.lax.fori_loop(
      start_iter, num_iter, body,
      (inputs, rng, final_seqs, masks, kept_confidence))
  if refine and start_iter < num_iter:
    final_seqs = final_seqs.at[:, -1].set(_refine(
        final_seqs[:, -1], rng, kept_confidence, unknown_at_start,
        guided_logits, probability_of, mask_token_id, refine_steps, refine_fraction,
        refine_choice_temperature, sampling_temperature_at(
            num_iter - 1, num_iter, sampling_temperature,
            sampling_temperature_end) if refine_temperature is None
        else refine_temperature))
  if return_masks:
    return final_seqs, masks
  return final_seqs


def _refine(ids, rng, confidence, unknown_at_start, guided_logits,
            probability_of, mask_token_id, steps, fraction, temperature,
            sampling_temperature):
  """Corrector steps: each re-masks `fraction` of the generated tokens, the
  least confident when they were kept (with Gumbel noise of `temperature` on
  the log confidence), and re-samples them from the model given all the
  others, at full guidance and token temperature `sampling_temperature`.
  Given tokens (infinite confidence) are never re-masked.
  `[batch, seq_len]` -> `[batch, seq_len]`."""
  count = jnp.clip(jnp.floor(unknown_at_start * fraction), 1,
                   unknown_at_start)[:, None]

  def step(_, state):
    ids, rng, confidence = state
    rng, choice_rng, sample_rng = jax.random.split(rng, 3)
    masking = mask_by_random_topk(choice_rng, count, confidence, temperature)
    logits = guided_logits(jnp.where(masking, mask_token_id, ids), 1.0,
                           sampling_temperature)
    sampled = _categorical(sample_rng, logits)
    ids = jnp.where(masking, sampled, ids)
    confidence = jnp.where(masking, probability_of(logits, sampled),
                           confidence)
    return ids, rng, confidence

  return jax.lax.fori_loop(0, steps, step, (ids, rng, confidence))[0]
