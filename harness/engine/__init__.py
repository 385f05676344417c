"""The one trainer and the one inference call (:mod:`~harness.engine.trainer`): epochs,
precision, gradient accumulation, DDP, optimizers and schedules
(:mod:`~harness.engine.schedules`), batch preparation (:mod:`~harness.engine.batches`),
checkpoint files and exact resume, metrics logging.

May import every package below it: :mod:`harness.util`, :mod:`harness.api`, :mod:`harness.data`,
:mod:`harness.nn`, :mod:`harness.registry` and :mod:`harness.results`. It never imports the
experiment: validation, model selection and checkpointing reach it as hooks.
"""
