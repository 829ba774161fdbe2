"""Benchmarks of fastopt against torch.optim (``fastopt bench`` and the ``bench/`` suites).

Importing this package is cheap: torch is imported by the functions that need it.

* :mod:`~fastopt.benchmark.param_sets`: the parameter sets (ResNet-50, GPT-2 small, ...);
* :mod:`~fastopt.benchmark.timing`: interleaved timer, bandwidth reference, bytes per step;
* :mod:`~fastopt.benchmark.candidates`: the optimizers compared;
* :mod:`~fastopt.benchmark.step`: the optimizer-step benchmark;
* :mod:`~fastopt.benchmark.train_loop`: forward + backward + step of small models;
* :mod:`~fastopt.benchmark.pipeline`: clip + step and AMP unscale + clip + step;
* :mod:`~fastopt.benchmark.report`: tables (rich, plain text, markdown) and JSON.
"""
