#!/usr/bin/env bash
# Build the DFT environment that generate.py runs in (GPAW + phonopy + SevenNet-0), separate from
# the project's .venv: sevenn needs e3nn >= 0.5, mace-torch there pins e3nn 0.4.4.
# Usage: bash benchmarks/data/setup_env.sh [ENV_DIR]   (default .venv-dft, beside the project's .venv)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
env_dir="${1:-.venv-dft}"
python3 -m venv "$env_dir"
# torch first, the CPU build this machine keeps on disk (pip's find-links), so sevenn does not pull another
"$env_dir/bin/pip" install torch==2.13.0
# GPAW builds from source; its site config selects the C++ compiler (no libxc, BLAS, FFTW or MPI)
GPAW_CONFIG="$here/gpaw_siteconfig.py" "$env_dir/bin/pip" install gpaw==26.7.0 gpaw-data==1.2.1 \
    ase==3.29.0 phonopy==4.10.0 phono3py==4.10.0 numpy==2.4.6 scipy==1.17.1
"$env_dir/bin/pip" install sevenn==0.13.0
"$env_dir/bin/gpaw" info
