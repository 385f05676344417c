"""One experiment, its modules in the order of the data path: build the parts
(:mod:`~harness.run.components`), check before work (:mod:`~harness.run.preflight`), train
the method through the engine (:mod:`~harness.run.training`, :mod:`~harness.run.checkpoints`),
evaluate with the protocols (:mod:`~harness.run.evaluation`), record the run
(:mod:`~harness.run.record`); :mod:`~harness.run.experiment` orchestrates them and
:mod:`~harness.run.dirgen` trains the DIR generator through the same engine.

May import every package but :mod:`harness.cli`.
"""
