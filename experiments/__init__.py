"""The experiments behind docs/results.md and the benchmarks; each runs from the repository root
as `python -m experiments.NAME [--flags]` (`--help` lists its flags; `--out` names the folder of
those that write files). Sweeps train small models and write CSV, PNG and a markdown table:
k_sweep (loss against K), window_sweep (the hidden tokens' window W), chunk_sweep (the chunk C).
Measurements: latency (inference cost against vanilla, written to --out), bench_train (train-step
time), bench_inference (KV cache, prefill and decode time), bench_kernel (tiles the Pallas kernel
visits), bench_data (loader throughput), memory_per_device (compiled memory of a sharded train
step), bench_device (one chip: train step and MFU, attention against the platform's best,
decode). Shared code: runner (a sweep's runs, trained or resumed), report (its CSV, tables,
plots), sweep (the sweeps' command line), inference_timing (the round-robin inference timings),
train_timing (train-step timings), attention_paths (ours and the platforms' best attention), cli
(the commands' argument checks). This package imports nothing, so memory_per_device can set
XLA_FLAGS before JAX starts.
"""
