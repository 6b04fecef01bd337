"""benchmarks/bench_rows.py: the rows of `make bench`'s report, from fake results.

The figures of issue 14 come from `make bench`: the bf16 sampler against its
floor at batches 2 and 8, and the train steps at the ImageNet-256 shapes in
float32 and (stage 2) bfloat16, each against the peak of its own precision.
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] /
                       "benchmarks"))
import bench_rows  # pylint: disable=wrong-import-position


def _sampler_row(batch, sample_s, detokenize_s, forwards_floor_s):
  mode = {"sample_s": sample_s, "forward_s": 0.1, "detokenize_s": detokenize_s,
          "overhead": 1.0 + batch / 100}
  return {"batch": batch, "num_iter": 8, "repeats": 3,
          "transformer_params": 172_000_000, "tokens_per_forward": 257 * batch,
          "float32": dict(mode, sample_s=2 * sample_s), "bfloat16": mode,
          "bf16_speedup": 2.0,
          "bf16_floor": {
              "matmul_peak_bf16": 360e9, "forwards_floor_s": forwards_floor_s,
              "decode_over_forwards_floor":
                  (sample_s - detokenize_s) / forwards_floor_s}}


def _stage(dtype, utilisation, reference):
  return {"batch_size": 2, "dtype": dtype, "repeats": 3, "steps_per_s": 0.25,
          "flops_per_step": 1e12, "achieved_flops_per_s": 2.5e11,
          "utilisation": utilisation, "utilisation_reference": reference,
          "utilisation_vs_best_peak": utilisation - 0.05}


def _rows():
  res = {
      "sampler_imagenet": {"results": [
          _sampler_row(2, sample_s=6.0, detokenize_s=2.0,
                       forwards_floor_s=4.0),    # 1.00x: passes
          _sampler_row(8, sample_s=30.0, detokenize_s=9.0,
                       forwards_floor_s=15.0)],  # 1.40x: fails
                           "sequential": None},
      "train_step_imagenet": {
          "utilisation_reference": "float32",
          "stages": {"tokenizer": _stage("float32", 0.386, "float32"),
                     "transformer": _stage("float32", 0.784, "float32")}},
      "train_step_imagenet_bf16": {
          "utilisation_reference": "float32",
          "stages": {"transformer": _stage("bfloat16", 0.485, "bfloat16")}},
  }
  rows = bench_rows.build_rows(res, demo_measured=False)
  return {r["metric"]: r for r in rows}


def test_the_bf16_sampler_floor_is_a_row_per_batch_against_1_25():
  rows = _rows()
  b2 = rows["bf16 sampler vs its floor, ImageNet-256, batch 2"]
  b8 = rows["bf16 sampler vs its floor, ImageNet-256, batch 8"]
  assert b2["value"] == 1.0 and b2["passed"] is True
  assert b8["value"] == 1.4 and b8["passed"] is False
  assert b2["target"] == 1.25 and b2["source"] == "sampler_imagenet"


def test_the_overhead_rows_read_the_largest_batch():
  row = _rows()["Sampler overhead, ImageNet-256, f32"]
  assert row["value"] == 1.08 and "batch 8" in row["how"]


def test_the_imagenet_train_steps_are_checked_in_their_own_precision():
  rows = _rows()
  s1 = rows["Stage 1 (tokenizer), ImageNet-256, float32 train step: "
            "FLOP utilisation"]
  s2 = rows["Stage 2 (transformer), ImageNet-256, float32 train step: "
            "FLOP utilisation"]
  s2b = rows["Stage 2 (transformer), ImageNet-256, bfloat16 train step: "
             "FLOP utilisation"]
  assert (s1["value"], s1["target"], s1["passed"]) == (0.386, 0.35, True)
  assert (s2["value"], s2["passed"]) == (0.784, True)
  assert (s2b["value"], s2b["target"], s2b["passed"]) == (0.485, 0.5, False)
  assert "vs the bfloat16 matmul rate" in s2b["how"]
  assert "vs the float32 matmul rate" in s2["how"]
  assert s2b["source"] == "train_step_imagenet_bf16"
  assert s1["source"] == "train_step_imagenet"
