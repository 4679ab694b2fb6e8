#!/usr/bin/env bash
# DGL test lane: build a virtual environment in which DGL from PyPI loads, and run the DGL tests.
#
# DGL's PyPI wheels load only beside torch 2.0.0-2.2.1, while the main environment uses a newer
# torch, so the DGL interop (KNNGraph.to_dgl / from_dgl, graphclust.nn.dgl_backend) is tested
# in a separate environment:
#
#     bash scripts/dgl_lane.sh                 # venv in ./.venv-dgl
#     bash scripts/dgl_lane.sh /tmp/venv-dgl   # or DGL_VENV=/tmp/venv-dgl bash scripts/dgl_lane.sh
#
# Environment variables (all optional):
#     DGL_VENV        where the venv lives (default: <repo>/.venv-dgl; the first argument wins)
#     PYTHON          interpreter that creates the venv (default: python3; needs 3.10-3.12)
#     TORCH_VERSION   default 2.2.1 (dgl 2.1.0 ships native libraries for torch 2.0.0-2.2.1 only;
#                     with 2.2.2 `import dgl` fails: no libgraphbolt_pytorch_2.2.2.so)
#     DGL_VERSION     default 2.1.0
#     SKIP_INSTALL=1  reuse an existing venv as it is and only run the tests
#
# torch is taken from the PyTorch CPU index when that index answers; otherwise from PyPI,
# whose x86_64 torch 2.2.x wheel pulls the CUDA libraries (about 2.5 GB to download).
# Installs and tests run under `nice -n 19` with OMP_NUM_THREADS=1 (a shared CPU).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-${DGL_VENV:-$ROOT/.venv-dgl}}"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="${TORCH_VERSION:-2.2.1}"
DGL_VERSION="${DGL_VERSION:-2.1.0}"
CPU_INDEX="https://download.pytorch.org/whl/cpu"
NICE=(nice -n 19 env OMP_NUM_THREADS=1)

log() { printf '[dgl-lane] %s\n' "$*"; }
die() { printf '[dgl-lane] error: %s\n' "$*" >&2; exit 1; }

command -v "$PYTHON" >/dev/null || die "no interpreter '$PYTHON'; set PYTHON=/path/to/python3.10-3.12"
PYVER="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
case "$PYVER" in
    3.10|3.11|3.12) ;;
    *) die "torch $TORCH_VERSION and dgl $DGL_VERSION have wheels for Python 3.10-3.12, not $PYVER; set PYTHON=" ;;
esac

VPY="$VENV/bin/python"
if [[ "${SKIP_INSTALL:-0}" != "1" ]]; then
    if [[ ! -x "$VPY" ]]; then
        log "creating venv $VENV (Python $PYVER)"
        "$PYTHON" -m venv "$VENV"
    else
        log "reusing venv $VENV"
    fi
    PIP=("${NICE[@]}" "$VPY" -m pip install --disable-pip-version-check)

    # pins that every later install must respect: this torch, and NumPy 1.x (torch 2.2 and
    # DGL 2.1 are built against NumPy 1 and break on NumPy 2)
    CONSTRAINTS="$VENV/dgl-lane-constraints.txt"
    printf 'torch==%s\nnumpy<2\n' "$TORCH_VERSION" > "$CONSTRAINTS"

    if "$VPY" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
        log "torch $TORCH_VERSION already installed"
    elif "$VPY" -c "import urllib.request; urllib.request.urlopen('$CPU_INDEX/torch/', timeout=10)" 2>/dev/null; then
        log "installing torch $TORCH_VERSION (CPU build) from $CPU_INDEX"
        "${PIP[@]}" --index-url "$CPU_INDEX" "torch==$TORCH_VERSION"
    else
        log "the PyTorch CPU index is unreachable: installing torch $TORCH_VERSION from PyPI"
        log "(on x86_64 this pulls the CUDA libraries, about 2.5 GB; torch runs on CPU all the same)"
        "${PIP[@]}" -c "$CONSTRAINTS" "torch==$TORCH_VERSION" "numpy<2"
    fi

    # `import dgl` imports graphbolt, which needs torchdata.datapipes (gone in torchdata 0.10+;
    # 0.8 and 0.9 fail to import beside torch 2.2) plus pandas, pyyaml and pydantic that dgl does
    # not declare. torchdata 0.7.1 (pinned to torch 2.1.1 in its metadata, works with 2.2) is
    # installed without dependencies, and so is dgl, whose declared ones are listed here.
    log "installing dgl $DGL_VERSION, its dependencies and graphclust's"
    "${PIP[@]}" --no-deps "dgl==$DGL_VERSION" "torchdata==0.7.1"
    "${PIP[@]}" -c "$CONSTRAINTS" \
        "numpy<2" "scipy>=1.10" networkx requests psutil tqdm pandas pyyaml pydantic \
        "torch_geometric>=2.4" "faiss-cpu>=1.8" "scikit-learn>=1.3" \
        "pytest>=7" "pytest-timeout>=2"
    # graphclust itself without its dependency list (which would not pin torch/numpy)
    "${PIP[@]}" -c "$CONSTRAINTS" --no-deps -e "$ROOT"
fi

[[ -x "$VPY" ]] || die "no venv at $VENV; run without SKIP_INSTALL=1 first"
log "versions:"
"${NICE[@]}" "$VPY" -c "import torch, numpy, dgl, torch_geometric as pyg; print('  torch', torch.__version__, '| numpy', numpy.__version__, '| dgl', dgl.__version__, '| torch_geometric', pyg.__version__)" \
    || die "dgl does not import in $VENV (see the traceback above)"

cd "$ROOT"
log "running the DGL tests"
"${NICE[@]}" "$VPY" -m pytest -q -p no:cacheprovider tests/nn/test_dgl_backend.py tests/graph -k dgl
