"""The sweep machinery of experiments/ (runner, report): FLOPs accounting, seed-paired tables,
resumable runs; and the sweeps' command line."""
import csv
import dataclasses
import json

import numpy as np
import pytest

from experiments import report, runner
from experiments.runner import Arm
from tests import commands


def test_step_flops_vanilla_by_hand():
  cfg = runner.config(Arm("v", "vanilla"), "quick", 0)
  m, t = cfg.model, cfg.train
  d, L, q, kv = m.d_model, t.seq_len, m.num_heads * m.head_dim, m.num_kv_heads * m.head_dim
  matmuls = L * (2 * d * (2 * q + 2 * kv) + 6 * d * m.mlp_dim)
  attention = 4 * q * L * (L + 1) / 2  # causal pairs, scores and values
  forward = m.num_layers * (matmuls + attention) + 2 * d * m.vocab_size * L
  assert runner.step_flops(cfg) == pytest.approx(3 * t.batch_size * forward)


def test_step_flops_order_of_variants():
  f = {r: runner.step_flops(runner.config(Arm(r, *spec), "full", 0)) for r, spec in {
      "vanilla": ("vanilla",), "phd": ("phd", 2), "cswa": ("phd_cswa", 2, 16, 32),
      "repeat": ("repeat", 2), "cswa3": ("phd_cswa", 3, 16, 32)}.items()}
  # K=2 doubles the matmuls but not the logits; a hidden token sees more keys in a window of
  # 16 than phd's same-position copies; repeat's attention is 4x vanilla's
  assert f["vanilla"] < f["phd"] < f["cswa"] < f["repeat"] < 2 * f["vanilla"] * 1.1
  assert 2.4 * f["vanilla"] < f["cswa3"] < 3 * f["vanilla"]


def test_aggregate_pairs_by_seed():
  finals = [dict(run=r, K=1, W=0, C=0, seed=s, steps=10, tokens=100, flops=fl, val_bits_per_byte=v)
            for r, fl, vals in (("a", 1.0, (3.0, 2.0)), ("b", 2.0, (2.9, 1.95)))
            for s, v in enumerate(vals)]
  a, b = report.aggregate(finals, reference="a")
  assert (a["mean"], a["delta"], a["delta_std"]) == (2.5, 0.0, 0.0)
  assert b["mean"] == pytest.approx(2.425) and b["flops_x"] == 2.0
  # unpaired std is huge (the seeds differ by ~1.0); paired differences are -0.1 and -0.05
  assert b["delta"] == pytest.approx(-0.075)
  assert b["delta_std"] == pytest.approx(np.std([-0.1, -0.05], ddof=1))
  md = report.markdown_table([a, b], "a")
  assert "| b | 1 | - | - |" in md and "-0.0750 ± 0.0354" in md


@pytest.mark.integration
def test_sweep_trains_writes_outputs_and_resumes(tmp_path, monkeypatch, corpus_glob):
  """Two runs x two seeds at 3 steps: CSV, PNG and table written; a rerun retrains nothing."""
  monkeypatch.setitem(runner.SCALES, "quick", dict(
      runner.SCALES["quick"], train=dict(runner.SCALES["quick"]["train"], steps=3, val_every=3,
                                         log_every=1, val_batches=1)))
  config = runner.config

  def small_corpus(run, scale, seed):  # the test corpus: fast to load
    cfg = config(run, scale, seed)
    cfg.data.update(source="text_files", text_files=corpus_glob, val_fraction=0.2)
    return cfg

  monkeypatch.setattr(runner, "config", small_corpus)
  monkeypatch.setattr(report, "header", lambda settings, what: f"# {what}\n\n")
  settings = runner.Settings(scale="quick", out=str(tmp_path), seeds=2, keep_checkpoints=False)
  runs = [Arm("vanilla", "vanilla"), Arm("cswa", "phd_cswa", 2, 4, 8)]
  finals, rows = runner.run_sweep(runs, settings)
  md = report.write_outputs(settings, "t", "test sweep", finals, rows, reference="vanilla")

  assert [(f["run"], f["seed"]) for f in finals] == [("vanilla", 0), ("vanilla", 1), ("cswa", 0),
                                                     ("cswa", 1)]
  with open(tmp_path / "t_final.csv") as f:
    assert len(list(csv.DictReader(f))) == 4
  with open(tmp_path / "t_curves.csv") as f:
    curve = list(csv.DictReader(f))
  assert {(r["run"], r["split"]) for r in curve} == {(r, s) for r in ("vanilla", "cswa")
                                                     for s in ("train", "val")}
  for png in ("t_curves.png", "t_final.png"):
    assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
  assert "| cswa | 2 | 4 | 8 |" in md and "(n=2)" in md
  run_dir = tmp_path / "runs" / "phd_cswa-k2-w4-c8-s0"
  assert (run_dir / "metrics.jsonl").exists() and not (run_dir / "checkpoints").exists()

  # a rerun reads each summary back instead of training (a changed summary shows through)
  done = tmp_path / "runs" / "phd_cswa-k2-w4-c8-s1" / "summary.json"
  summary = json.loads(done.read_text())
  done.write_text(json.dumps(dict(summary, val_bits_per_byte=1.25)))
  again, _ = runner.run_sweep(runs, settings)
  assert again[3]["val_bits_per_byte"] == 1.25
  assert [f["val_bits_per_byte"] for f in again[:3]] == [f["val_bits_per_byte"] for f in finals[:3]]

  # the same --out at other settings is refused, not silently mixed in
  settings = dataclasses.replace(settings, seeds=1)
  monkeypatch.setitem(runner.SCALES["quick"]["train"], "steps", 4)
  with pytest.raises(ValueError, match="other settings"):
    runner.run_sweep(runs, settings)


@pytest.mark.integration
def test_cli_rejects_bad_arguments():
  for bad, field in ((["--seeds", "0"], "--seeds=0"), (["--steps", "1"], "--steps=1")):
    p = commands.module("experiments.k_sweep", "--quick", *bad, expect=2)
    assert field in p.stderr


@pytest.mark.integration
@pytest.mark.slow
def test_k_sweep_quick_end_to_end(tmp_path):
  """The acceptance command, `python -m experiments.k_sweep --quick` (about 4 minutes on 2 CPU
  cores)."""
  commands.module("experiments.k_sweep", "--quick", f"--out={tmp_path}", timeout=900)
  with open(tmp_path / "k_sweep_final.csv") as f:
    assert len(list(csv.DictReader(f))) == 12  # 6 runs x 2 seeds
  assert (tmp_path / "k_sweep_curves.png").read_bytes()[:4] == b"\x89PNG"
  assert "vanilla, FLOPs of cswa K=2" in (tmp_path / "k_sweep.md").read_text()


@pytest.mark.integration
@pytest.mark.slow
def test_bench_startup_runs_both_settings():
  """`python -m experiments.bench_startup`, one round: both settings train, and the ratio line
  is the medians' ratio."""
  out = commands.module("experiments.bench_startup", "--rounds=1", timeout=600).stdout
  last = dict(kv.split("=") for kv in out.strip().splitlines()[-1].split(": ")[1].split())
  assert float(last["ratio"]) == pytest.approx(
      float(last["command"]) / float(last["defaults"]), abs=2e-3)
  assert "round 1/1 command" in out and "round 1/1 defaults" in out
