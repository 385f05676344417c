"""How a backbone plugin declares a published checkpoint (`Backbone.pretrained`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Pretrained:
    """One published checkpoint."""

    url: str
    layout: str
    """Key layout of the file, e.g. ``passt`` (hear21passt release) or ``beats`` ({cfg, model})."""
    config: Mapping[str, Any] = field(default_factory=dict)
    """Backbone config values the file needs (``size`` ...); applied unless set explicitly."""
    sha256: str | None = None
    """Only a hash the publisher states (of the file at ``url``: for an entry with a ``member``
    the archive's); otherwise the first download's hash is recorded."""
    page: str = ""
    """Where a person can download the file by hand (shown when offline)."""
    description: str = ""
    member: str | None = None
    """The checkpoint's path inside the zip archive at ``url``; None: ``url`` is the file."""

    @property
    def filename(self) -> str:
        """The name of the published file (the archive, for an entry with a ``member``)."""
        return self.url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
