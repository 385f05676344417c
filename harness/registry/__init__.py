"""Plugin discovery and configuration: entry points and manifests, the typed registries,
config parsing and validation, published checkpoints by name, checkpoint loading.

May import :mod:`harness.util`, :mod:`harness.api`, :mod:`harness.data` and :mod:`harness.nn`.
"""
