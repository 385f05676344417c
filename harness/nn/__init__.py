"""Shared neural-network parts for plugins: ViT layers, the Kaldi filterbank, impulse-response
banks and DSP, the DIR generator's model, checkpoint key helpers.

May import :mod:`harness.util`, :mod:`harness.api` and :mod:`harness.data` (audio files).
"""
