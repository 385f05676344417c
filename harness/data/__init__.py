"""From a data set's clips to batches: audio decoding, the DataLoader, the decoded-audio
cache and the embedding cache.

May import :mod:`harness.util` and :mod:`harness.api`.
"""
