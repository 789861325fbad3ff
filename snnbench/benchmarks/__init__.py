"""Benchmarks, commands that print ratios rather than timed tests: the spiking MLP's engines
against snnTorch's loop (``engine``, ``python -m snnbench.bench``), the conv SNN's (``conv``,
``python -m snnbench.conv_bench``) and what augmentation costs (``augment``, ``python -m
snnbench.bench_augment``)."""
