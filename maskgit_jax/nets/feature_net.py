"""A small image classifier whose activations serve as a perceptual loss.

The only pretrained feature network that ships offline is the FID Inception,
which measures the results and may not be trained against. This network is
trained instead, in seconds, on the run's own images and class labels
(`train_lib/feature_net_task.py`), then frozen. Its perceptual distance is
LPIPS-shaped without learned layer weights: at each stage the activations of
both images are unit-normalised over channels, and the squared differences
are averaged over positions and summed over stages.

Images `[b, h, w, c]` in [0, 1] -> logits `[b, num_classes]` and the stages'
activations `[b, h / 2**i, w / 2**i, widths[i]]`.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class FeatureNet(nn.Module):
  """Stages of two 3x3 convolutions (ReLU), average pooling between stages,
  global average pooling and a linear classifier.

  Attributes:
    widths: channels of each stage (a stage per entry).
    num_classes: classifier outputs (>= 2).
  """
  widths: Sequence[int] = (16, 32, 64)
  num_classes: int = 10

  @nn.compact
  def __call__(self, images: jax.Array):
    """`[b, h, w, c]` in [0, 1] -> (logits `[b, num_classes]`, [activations
    of each stage `[b, h_i, w_i, widths[i]]`])."""
    x = images * 2.0 - 1.0
    features = []
    for i, width in enumerate(self.widths):
      if i:
        x = nn.avg_pool(x, (2, 2), (2, 2), padding="SAME")
      for j in range(2):
        x = nn.relu(nn.Conv(width, (3, 3), name=f"conv{i}_{j}")(x))
      features.append(x)
    logits = nn.Dense(self.num_classes, name="classifier")(jnp.mean(x, (1, 2)))
    return logits, features


def perceptual_distance(net: FeatureNet, params, x: jax.Array,
                        y: jax.Array) -> jax.Array:
  """Mean over the batch of the summed per-stage distances between the
  unit-normalised activations of `x` and `y` (`[b, h, w, c]`); a scalar."""
  _, fx = net.apply({"params": params}, x)
  _, fy = net.apply({"params": params}, y)
  total = jnp.zeros((), jnp.float32)
  for a, b in zip(fx, fy):
    a = a * jax.lax.rsqrt(jnp.sum(jnp.square(a), -1, keepdims=True) + 1e-10)
    b = b * jax.lax.rsqrt(jnp.sum(jnp.square(b), -1, keepdims=True) + 1e-10)
    total += jnp.mean(jnp.sum(jnp.square(a - b), -1))
  return total
