"""Shared neural-network parts for plugins: ViT layers (``layers``), PaSST's log-mel (``mel``),
the Kaldi filterbank (``fbank``), AudioMAE's Swin decoder blocks (``swin``), state-dict helpers
for published checkpoints (``state_dicts``), impulse-response banks and DSP, the DIR
generator's model.

May import :mod:`harness.util`, :mod:`harness.api` and :mod:`harness.data` (audio files).
"""
