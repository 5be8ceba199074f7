#!/usr/bin/env bash
# Paper-scale GPU check of ICCLD, from a fresh checkout, on a machine with one CUDA GPU (< 8 minutes).
#
#   bash benchmarks/gpu_check.sh [gpu_check.py options, e.g. --out /some/where/gpu.json]
#
# Needs python with torch (CUDA), transformers, accelerate, safetensors, pyyaml, numpy, pillow, tqdm.
# diffusers and omegaconf may be missing: put their wheels, and those of any of their dependencies the
# machine lacks, in a `wheels/` folder at the repository root (or name another folder with WHEELS=...)
# and this script installs them offline with
#   pip install --no-index --find-links wheels/ diffusers omegaconf
# Make the folder where PyPI is reachable (all three are pure Python; omegaconf >= 2.4 needs only
# pyyaml, diffusers also needs importlib_metadata, which some images lack):
#   python -m pip wheel --no-deps -w wheels diffusers omegaconf importlib_metadata
# The package itself is not installed: PYTHONPATH=src.
# Writes benchmarks/results/gpu.json and the GPU section of docs/benchmarks.md; bring gpu.json back
# to your checkout and run `python benchmarks/write_gpu_section.py` to publish it there.
# Without a CUDA device it prints "no CUDA device; nothing measured" and exits 0.
#
# Environment: PYTHON (default python3), WHEELS (default wheels), GPU_CHECK_TIMEOUT (seconds, default 420).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-wheels}

if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null \
   && [[ " $* " != *" --device cpu "* ]]; then
    echo "no CUDA device; nothing measured"
    exit 0
fi
if [ -d "$WHEELS" ]; then
    echo "installing diffusers and omegaconf from $WHEELS/ (offline)"
    "$PYTHON" -m pip install -q --no-index --find-links "$WHEELS" diffusers omegaconf
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
exec timeout --kill-after=20 "${GPU_CHECK_TIMEOUT:-420}" "$PYTHON" benchmarks/gpu_check.py "$@"
