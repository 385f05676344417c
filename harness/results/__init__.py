"""Stored results: run folders and the SQLite store, leaderboard computation and its
renderers (Markdown, CSV, LaTeX, JSON, HTML).

May import :mod:`harness.util`, :mod:`harness.api`, :mod:`harness.data`, :mod:`harness.nn`
and :mod:`harness.registry`.
"""
