"""Tests of decoding, modes, crops and flips of one image."""
import io

import numpy as np
from PIL import Image
import pytest

from maskgit_jax.data import preprocess


def encode(img, fmt, **kwargs):
  buf = io.BytesIO()
  img.save(buf, fmt, **kwargs)
  return buf.getvalue()


def halves(width, height):
  """RGB image: left half red (255, 0, 0), right half blue (0, 0, 255)."""
  array = np.zeros((height, width, 3), np.uint8)
  array[:, :width // 2, 0] = 255
  array[:, width // 2:, 2] = 255
  return Image.fromarray(array)


# (name, encoded image, expected mean colour after compositing on white).
CASES = [
    ('RGB JPEG', lambda: encode(Image.new('RGB', (40, 30), (0, 128, 255)),
                                'JPEG', quality=100), (0, 128, 255)),
    ('RGB PNG', lambda: encode(Image.new('RGB', (40, 30), (10, 20, 30)),
                               'PNG'), (10, 20, 30)),
    ('RGBA transparent PNG', lambda: encode(
        Image.new('RGBA', (40, 30), (255, 0, 0, 0)), 'PNG'),
     (255, 255, 255)),
    ('RGBA half-transparent PNG', lambda: encode(
        Image.new('RGBA', (40, 30), (0, 0, 0, 128)), 'PNG'),
     (127, 127, 127)),
    ('RGBA opaque WebP', lambda: encode(
        Image.new('RGBA', (40, 30), (0, 255, 0, 255)), 'WEBP',
        lossless=True), (0, 255, 0)),
    ('L PNG', lambda: encode(Image.new('L', (40, 30), 77), 'PNG'),
     (77, 77, 77)),
    ('LA PNG', lambda: encode(Image.new('LA', (40, 30), (0, 0)), 'PNG'),
     (255, 255, 255)),
    ('P GIF with transparency', lambda: encode(
        Image.new('P', (40, 30), 0), 'GIF', transparency=0),
     (255, 255, 255)),
    ('P PNG', lambda: encode(
        Image.new('RGB', (40, 30), (200, 100, 0)).convert('P'), 'PNG'),
     (200, 100, 0)),
    ('CMYK JPEG', lambda: encode(Image.new('CMYK', (40, 30), (0, 0, 0, 0)),
                                 'JPEG', quality=100), (255, 255, 255)),
    ('1-bit BMP', lambda: encode(Image.new('1', (40, 30), 1), 'BMP'),
     (255, 255, 255)),
    ('RGB BMP', lambda: encode(Image.new('RGB', (40, 30), (1, 2, 3)), 'BMP'),
     (1, 2, 3)),
    ('I;16 PNG', lambda: encode(
        Image.fromarray(np.full((30, 40), 65535 // 4, np.uint16)), 'PNG'),
     (63.75, 63.75, 63.75)),
    ('I TIFF', lambda: encode(
        Image.fromarray(np.full((30, 40), 65535 // 2, np.int32)), 'TIFF'),
     (127.5, 127.5, 127.5)),
]


@pytest.mark.parametrize('name,make,colour', CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize('channels', [1, 3])
def test_modes_and_formats(name, make, colour, channels):
  del name
  p = preprocess.Preprocessor(image_size=16, channels=channels)
  for rng in (None, np.random.default_rng(0)):
    out = p(make(), rng)
    assert out.shape == (16, 16, channels) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    r, g, b = (c / 255 for c in colour)
    want = [r, g, b] if channels == 3 else [0.299 * r + 0.587 * g +
                                            0.114 * b]
    np.testing.assert_allclose(out.reshape(-1, channels).mean(0), want,
                               atol=2.5 / 255)


def test_sixteen_bit_keeps_precision():
  values = np.linspace(0, 65535, 40 * 30).reshape(30, 40).astype(np.uint16)
  out = preprocess.Preprocessor(image_size=30, channels=1,
                                resize_method='nearest')(
                                    encode(Image.fromarray(values), 'PNG'))
  # More than 256 distinct levels: not squashed through 8 bits.
  assert len(np.unique(out)) > 300


def test_paths_bytes_and_arrays_agree(tmp_path):
  img = halves(20, 20)
  data = encode(img, 'PNG')
  (tmp_path / 'a.png').write_bytes(data)
  p = preprocess.Preprocessor(image_size=8, channels=3)
  from_bytes = p(data)
  np.testing.assert_array_equal(p(str(tmp_path / 'a.png')), from_bytes)
  np.testing.assert_array_equal(p(np.asarray(img)), from_bytes)
  grey = np.arange(20 * 20, dtype=np.uint8).reshape(20, 20)
  np.testing.assert_array_equal(
      p(grey[:, :, None]), p(encode(Image.fromarray(grey), 'PNG')))


def test_eval_center_crop_of_wide_image():
  # 60x20: the central 20x20 square is 10 px red then 10 px blue.
  array = np.zeros((20, 60, 3), np.uint8)
  array[:, :30, 0] = 255
  array[:, 30:, 2] = 255
  array[:, :20] = 0  # The outer thirds are black and must be cut off.
  array[:, 40:] = 0
  out = preprocess.Preprocessor(image_size=20, channels=3)(array)
  np.testing.assert_allclose(out[:, :10], [[[1, 0, 0]] * 10] * 20, atol=1e-6)
  np.testing.assert_allclose(out[:, 10:], [[[0, 0, 1]] * 10] * 20, atol=1e-6)


def test_eval_is_identity_at_the_same_size():
  array = np.random.default_rng(0).integers(0, 256, (32, 32, 3), np.uint8)
  out = preprocess.Preprocessor(image_size=32, channels=3)(array)
  np.testing.assert_array_equal(out, array / np.float32(255))


def test_eval_crop_fraction():
  array = np.zeros((40, 40), np.uint8)
  array[10:30, 10:30] = 255
  out = preprocess.Preprocessor(image_size=20, channels=1,
                                eval_crop_fraction=0.5)(array)
  assert out.min() == 1.0  # Only the white center is kept.


def test_random_crop_box_rules():
  rng = np.random.default_rng(0)
  for _ in range(200):
    box = preprocess.random_resized_crop_box(rng, 64, 48, (0.3, 0.6),
                                             (0.5, 2.0))
    left, top, right, bottom = box
    assert 0 <= left < right <= 64 and 0 <= top < bottom <= 48
    w, h = right - left, bottom - top
    assert 0.3 * 0.9 <= w * h / (64 * 48) <= 0.6 * 1.1
    assert 0.5 * 0.9 <= w / h <= 2.0 * 1.1
  # Impossible window (whole-image area at ratio 4 on a square): fallback
  # is the largest centered window with the ratio clamped.
  assert preprocess.random_resized_crop_box(rng, 40, 40, (1.0, 1.0),
                                            (4.0, 4.0)) == (0, 15, 40, 25)


def test_training_randomness_is_deterministic_and_varies():
  img = encode(halves(64, 48), 'PNG')
  p = preprocess.Preprocessor(image_size=16, channels=3,
                              crop_scale=(0.2, 0.5))
  a = p(img, np.random.default_rng(5))
  np.testing.assert_array_equal(a, p(img, np.random.default_rng(5)))
  outs = [p(img, np.random.default_rng(s)) for s in range(8)]
  assert len({o.tobytes() for o in outs}) == 8


def test_flip_only():
  img = halves(16, 16)
  p = preprocess.Preprocessor(image_size=16, channels=3, random_crop=False,
                              random_flip=True)
  flipped = 0
  for seed in range(20):
    out = p(np.asarray(img), np.random.default_rng(seed))
    if out[0, 0, 2] == 1.0:  # Blue on the left: flipped.
      flipped += 1
      np.testing.assert_array_equal(out, p(np.asarray(img))[:, ::-1])
    else:
      np.testing.assert_array_equal(out, p(np.asarray(img)))
  assert 3 <= flipped <= 17
  p = preprocess.Preprocessor(image_size=16, channels=3, random_crop=False,
                              random_flip=False)
  for seed in range(5):
    np.testing.assert_array_equal(p(np.asarray(img),
                                    np.random.default_rng(seed)),
                                  p(np.asarray(img)))


def test_exif_orientation():
  img = halves(40, 20)  # Red left, blue right.
  exif = Image.Exif()
  exif[0x0112] = 6  # Rotate 90 degrees clockwise to display.
  data = encode(img, 'JPEG', quality=100, exif=exif.tobytes())
  out = preprocess.Preprocessor(image_size=20, channels=3)(data)
  # Displayed 20 wide x 40 high: red on top, blue at the bottom.
  assert out[2, 10, 0] > 0.9 and out[2, 10, 2] < 0.1
  assert out[17, 10, 2] > 0.9 and out[17, 10, 0] < 0.1


def test_jpeg_draft_matches_full_decode():
  yy, xx = np.mgrid[0:480, 0:640]
  array = np.stack([xx * 255 // 639, yy * 255 // 479, (xx + yy) % 256],
                   -1).astype(np.uint8)
  array[..., 2] = 128
  data = encode(Image.fromarray(array), 'JPEG', quality=95)
  p = preprocess.Preprocessor(image_size=64, channels=3)
  with Image.open(io.BytesIO(data)) as img:
    img.draft('RGB', (160, 120))
    assert img.size == (160, 120)  # Draft mode applies to this file.
  drafted = p(data)
  full = p(np.asarray(Image.open(io.BytesIO(data)).convert('RGB')))
  assert np.abs(drafted - full).mean() < 0.01


def test_undecodable_inputs_raise():
  p = preprocess.Preprocessor(image_size=8, channels=3)
  good = encode(halves(64, 64), 'JPEG')
  for bad in (b'', b'not an image at all', good[:len(good) // 2]):
    with pytest.raises(Exception):
      p(bad)
