"""Every hook a `harness` plugin can implement, documented in this one place.

A plugin is a module (or object) with functions decorated by :data:`hookimpl`.
It is found through the ``harness`` entry-point group (built-ins use the same
group as third-party packages), or loaded from a file or module with
``harness --plugin PATH_OR_MODULE``.

Each ``register_*`` hook receives a ``register`` callback and calls it once per
component class it adds. A component class subclasses the matching base in
:mod:`harness.api` and carries its own ``name``, ``description`` and typed
``Config`` dataclass::

    from harness import hookimpl
    from harness.api import Method

    class MyLoss(Method):
        name = "my-loss"
        description = "Cross-entropy plus my regulariser."
        ...

    @hookimpl
    def register_methods(register):
        register(MyLoss)

Registering a name that another plugin already registered is an error that
names both plugins.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT = "harness"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[[type], None]


# -- components ---------------------------------------------------------------


@hookspec
def register_backbones(register: Register) -> None:
    """Add backbones (audio encoders).

    :param register: call with each :class:`harness.api.Backbone` subclass.

    A backbone declares the front-end it expects (``sample_rate`` and a
    ``frontend()`` module turning waveforms into features), maps features to a
    :class:`harness.api.Encoded` (clip embedding ``[B, D]`` and tokens), and
    builds the classification head methods train on top of it.
    """


@hookspec
def register_methods(register: Register) -> None:
    """Add tuning methods (training objectives).

    :param register: call with each :class:`harness.api.Method` subclass.

    A method owns the loss of one training step; the core owns the loop,
    optimiser, devices, seeds and checkpoints.
    """


@hookspec
def register_augmentations(register: Register) -> None:
    """Add training-time augmentations.

    :param register: call with each :class:`harness.api.Augmentation` subclass.

    An augmentation declares its ``stage``: ``"waveform"`` (before the
    backbone's front-end, e.g. impulse-response convolution) or
    ``"features"`` (after it, e.g. masking). It runs on whole batches on the
    training device, during training only.
    """


@hookspec
def register_datasets(register: Register) -> None:
    """Add data sets.

    :param register: call with each :class:`harness.api.Dataset` subclass.

    A data set lists clips (file, label, recording device, metadata) for its
    ``train`` and ``eval`` splits; the core reads and resamples the audio.
    """


@hookspec
def register_protocols(register: Register) -> None:
    """Add evaluation protocols.

    :param register: call with each :class:`harness.api.Protocol` subclass.

    A protocol evaluates a trained model and returns flat metrics plus the
    leaderboard columns it fills.
    """


@hookspec
def register_loggers(register: Register) -> None:
    """Add training-metric loggers (named in ``run.loggers``).

    :param register: call with each :class:`harness.api.Logger` subclass.

    A logger receives the same events the core writes to the run's
    ``metrics.jsonl`` (one per logged step and one per epoch) and writes its
    files into the folder it is opened on; they end up in the run folder.
    """


# -- command line -------------------------------------------------------------


@hookspec
def register_commands(cli: Any) -> None:
    """Add sub-commands to the ``harness`` command line.

    :param cli: the top-level :class:`click.Group`; decorate new commands with
        ``@cli.command()``.
    """
