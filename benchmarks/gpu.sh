#!/usr/bin/env bash
# GPU benchmarks of issue 8 (under 10 minutes on one H100/H200-class GPU):
#   PaSST-S training clips/s and MFU at 1 s with frequency patchout (fp32, bf16, bf16+compile),
#   the data path (decoded cache vs WAV decoding) against the training step,
#   AudioMAE-base MAE pretraining clips/s.
# Usage: benchmarks/gpu.sh [extra pytest args]; results also in benchmarks/gpu.json.
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU: nothing to measure')"
export HARNESS_PROGRESS=0
timeout 600 python -m pytest tests/benchmarks/test_gpu.py --benchmark-only -s -q \
  --benchmark-json benchmarks/gpu.json "$@"
