"""The one trainer: epochs, precision, gradient accumulation, DDP, optimizers and schedules,
checkpoint files and exact resume, metrics logging.

May import every package below it: :mod:`harness.util`, :mod:`harness.api`, :mod:`harness.data`,
:mod:`harness.nn`, :mod:`harness.registry` and :mod:`harness.results`. It never imports the
experiment: validation and checkpointing reach it as hooks.
"""
