"""Writes a class-per-folder image tree from an npm emoji-datasource package.

Usage (by hand; not part of the test suite):
  cd /tmp && npm pack emoji-datasource-twitter@16.0.0 && \
      tar xzf emoji-datasource-twitter-16.0.0.tgz   # -> /tmp/package
  python tests/data/tools/make_emoji_folder.py /tmp/package /tmp/emoji_folder
  python tests/data/tools/make_emoji_folder.py /tmp/package \
      tests/data/folder_colour --size=16 --per_class=10 \
      --categories=animals_nature,food_drink,travel_places

The package (`emoji-datasource-twitter`, package.json licence field: MIT,
for the data and code of iamcal/emoji-data) ships the Twitter emoji images,
which its README states are available under CC-BY 4.0 (Twemoji graphics,
Copyright Twitter, Inc and other contributors). `emoji.json` gives each
emoji's image file (under img/twitter/64/, 64x64 PNG, palette mode with
transparency) and category; this writes `OUT/<category>/<file>.png` for the
9 categories with images (skin-tone variants and the 5-image "Component"
category left out): activities, animals_nature, flags, food_drink, objects,
people_body, smileys_emotion, symbols, travel_places (1,906 images).
With --size the images are resized (RGBA, Lanczos); --per_class keeps the
first N of each category in the package's sort order.

--vendor=google reads `emoji-datasource-google` (same layout, img/google/64/,
`has_img_google`), the second colour set of the folder recipe's checks:
  cd /tmp && npm pack emoji-datasource-google@16.0.0 && \
      tar xzf emoji-datasource-google-16.0.0.tgz
  python tests/data/tools/make_emoji_folder.py /tmp/package /tmp/noto_folder \
      --vendor=google
Its README states that the Android/Google/Noto images are available under
the Apache License 2.0 (package.json licence field: MIT, as above).
"""
import argparse
import json
import os
import shutil

from PIL import Image

SKIPPED = ("Component",)


def slug(category: str) -> str:
  """'Smileys & Emotion' -> 'smileys_emotion'."""
  words = category.replace("&", " ").lower().split()
  return "_".join(words)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("package", help="the extracted npm package folder")
  parser.add_argument("out", help="the class-per-folder tree to write")
  parser.add_argument("--size", type=int, default=0,
                      help="resize to SIZE x SIZE (0: keep 64x64)")
  parser.add_argument("--per_class", type=int, default=0,
                      help="at most this many images a class (0: all)")
  parser.add_argument("--vendor", default="twitter",
                      choices=("twitter", "google"),
                      help="whose images: emoji-datasource-<vendor>")
  parser.add_argument("--categories", default="",
                      help="comma-separated category folder names (all)")
  args = parser.parse_args()
  with open(os.path.join(args.package, "emoji.json")) as f:
    emoji = json.load(f)
  wanted = set(filter(None, args.categories.split(",")))
  emoji.sort(key=lambda e: e.get("sort_order", 0))
  counts = {}
  for e in emoji:
    if not e.get(f"has_img_{args.vendor}") or e["category"] in SKIPPED:
      continue
    name = slug(e["category"])
    if wanted and name not in wanted:
      continue
    if args.per_class and counts.get(name, 0) >= args.per_class:
      continue
    src = os.path.join(args.package, "img", args.vendor, "64", e["image"])
    if not os.path.isfile(src):
      continue
    dst = os.path.join(args.out, name, e["image"])
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if args.size:
      with Image.open(src) as img:
        img = img.convert("RGBA").resize((args.size, args.size),
                                         Image.Resampling.LANCZOS)
        img.save(dst, optimize=True)
    else:
      shutil.copyfile(src, dst)
    counts[name] = counts.get(name, 0) + 1
  for name in sorted(counts):
    print(f"{name}: {counts[name]}")
  print(f"{sum(counts.values())} images in {len(counts)} classes -> "
        f"{args.out}")


if __name__ == "__main__":
  main()
