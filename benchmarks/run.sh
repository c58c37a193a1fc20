#!/usr/bin/env bash
# The recorded run behind benchmarks/RESULTS.md: every case, every method, every peer,
# alternating, warm-up first, median of 7. The table goes to results.txt, the full
# record (machine, BLAS kernel, threads, versions, load, every time) to results.json.
# OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are unset for this command only, so OpenBLAS
# picks its kernel for this CPU itself (the record names the kernel that ran).
set -euo pipefail
cd "$(dirname "$0")/.."
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/dilconv bench \
    --json benchmarks/results.json "$@" | tee benchmarks/results.txt
