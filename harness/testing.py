"""Deprecated: moved to :mod:`harness.api.testing` (this name stays for one release)."""

from harness.api.testing import (  # noqa: F401
    TinyBackbone,
    apply_augmentation,
    build,
    make_batch,
    make_task,
    training_step,
)
