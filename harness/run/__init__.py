"""One experiment: build the components, check before work, train through the engine,
evaluate with the protocols, record the run.

May import every package but :mod:`harness.cli`.
"""
