"""benchmarks/sampler.py --floor: the bf16 sampler against its floor.

Fake sampler rows and fake peaks with a known answer: the floor is
num_iter x 2 x parameters x tokens at the bf16 peak plus the detokenize,
and the peak is the higher of the two measurements taken before and after
the samplers, so a slow moment of the machine cannot lower the floor.
"""
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] /
                       "benchmarks"))
import sampler  # pylint: disable=wrong-import-position
import peak as peak_lib  # pylint: disable=wrong-import-position


def _row(shape, batch, num_iter, repeats, fast_tokenizer_dtype):
  del repeats, fast_tokenizer_dtype
  mode = dict(forward_s=1.0, detokenize_s=2.0, sample_s=12.0, overhead=1.0)
  return {"shape": shape, "batch": batch, "num_iter": num_iter,
          "transformer_params": 1000, "tokens_per_forward": 50,
          "float32": dict(mode), "bfloat16": dict(mode), "bf16_speedup": 1.0}


def test_floor_uses_the_higher_peak_of_before_and_after(monkeypatch, tmp_path):
  peaks = iter([2e6, 1e6])  # before: 2 MFLOP/s; after: a slow moment
  monkeypatch.setattr(sampler, "bench_shape", _row)
  monkeypatch.setattr(peak_lib, "matmul_peak",
                      lambda dtype, sizes: (next(peaks), {}))
  out = tmp_path / "floor.json"
  monkeypatch.setattr(sys, "argv", [
      "sampler.py", "--shapes=tiny", "--batches=2", "--num_iter=8",
      "--floor", f"--out={out}"])
  sampler.main()
  floor = json.loads(out.read_text())["results"][0]["bf16_floor"]
  assert floor["matmul_peak_bf16_before_after"] == [2e6, 1e6]
  assert floor["matmul_peak_bf16"] == 2e6
  forwards = 8 * 2 * 1000 * 50 / 2e6  # 0.4 s
  assert abs(floor["forwards_floor_s"] - forwards) < 1e-12
  assert abs(floor["decode_over_forwards_floor"] - (12 - 2) / forwards) < 1e-9
  assert floor["target_met"] is False  # 10 s of decode > 1.25 x 0.4 s


def test_a_fused_sampler_that_cannot_compile_leaves_the_others(monkeypatch):
  """cuDNN may refuse the fused attention's shape: bench_shape still times
  the float32 and bfloat16 samplers and names the fused one's error."""
  real = sampler._lowered  # pylint: disable=protected-access

  def programs(s, batch, num_iter):
    if s.transformer.attention_impl == "fused":
      raise NotImplementedError("Unsupported sequence length Q 257, KV 257.")
    return real(s, batch, num_iter)
  monkeypatch.setattr(sampler, "_lowered", programs)
  r = sampler.bench_shape("tiny", 2, 2, 1, "float32", fused_bf16=True)
  assert r["modes"] == ["float32", "bfloat16"]
  assert "bfloat16_fused" not in r and r["bfloat16"]["sample_s"] > 0
  assert r["errors"]["bfloat16_fused"].startswith(
      "NotImplementedError: Unsupported sequence length")
