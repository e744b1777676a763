"""Measurements on a CUDA GPU (run by hand on the GPU machine, never in CI).

    timing  device time from CUDA-graph replay, host time per call, copy bandwidth, output checks
    bench   normgen's add_rmsnorm against torch eager, torch.compile and Liger-Kernel
    report  the benchmark's tables, targets, JSON and plots
    tune    launch configs per op and cuda dispatch bucket -> dsl/tuning/cuda.json
    calls   a kernel launch built from the ABI and checked against the generated reference
    host    host time per eager call of every call form against the launch floor

Importing these modules makes no CUDA call; see benchmarks/README.md for the commands.
"""
