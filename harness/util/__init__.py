"""Basics every layer may use: errors, progress bars, the cache folder, the kill test hook.

Imports nothing else of :mod:`harness` (and no torch), so the command line's fast paths
can use it.
"""
