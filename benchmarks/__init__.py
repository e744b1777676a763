"""Measurements on a CUDA GPU (run by hand on the GPU machine, never in CI).

    timing  device time from CUDA-graph replay, host time per call, copy bandwidth, output checks
    bench   normgen's add_rmsnorm against torch eager, torch.compile and Liger-Kernel
    tune    candidate launch configs per cuda dispatch bucket -> dsl/tuning/cuda.json

Importing these modules makes no CUDA call; see benchmarks/README.md for the commands.
"""
