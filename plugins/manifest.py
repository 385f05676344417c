"""What the built-in plugins provide, declared without importing them.

``harness --help``, ``harness list`` and ``harness plugins`` read this instead of
importing every plugin (and torch). Regenerate after changing a plugin::

    harness plugins --manifest-for audio-tuning-harness --output plugins/manifest.json

A plugin whose source changed since is imported as before, so a stale file costs only speed.
"""

import json
from pathlib import Path

MANIFEST = json.loads(Path(__file__).with_name("manifest.json").read_text(encoding="utf-8"))
