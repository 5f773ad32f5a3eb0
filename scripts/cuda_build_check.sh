#!/usr/bin/env bash
# Builds the CUDA layers and their test outside the main Makefile, into a private build
# folder, and runs the test (on a machine without a GPU it reports its tests as skipped).
#   scripts/cuda_build_check.sh [BUILD]        (default build-cuda)
# Steps: every src/nn/cuda/*.cu with nvcc (-Werror, and CUDNN_WARN_DEPRECATED so a call
# cuDNN 9 deprecates fails the build) -> the CPU library of core + nn -> the test, compiled
# by mpicc with -DQT_HAVE_CUDA and linked against cudart, cuDNN, cuBLASLt -> run it.
# Exit status: the test's (0 = passed or skipped). NVCC_EXTRA adds nvcc flags (e.g.
# "-Xptxas -v" for the register and spill report); JOBS sets parallel nvcc runs (2).
# The binary can be carried to the GPU machine: run build-cuda/tests/test_cuda_layers there.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build-cuda}
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
NVCC=${NVCC:-$CUDA_HOME/bin/nvcc}
if [ ! -x "$NVCC" ] && ! command -v nvcc >/dev/null 2>&1; then
    echo "cuda_build_check: nvcc not found, skipped"; exit 77
fi
[ -x "$NVCC" ] || NVCC=$(command -v nvcc)
mkdir -p "$BUILD/cuda" "$BUILD/tests"
export NVCC BUILD NVCC_EXTRA=${NVCC_EXTRA:-}
# JOBS parallel nvcc processes (2 by default: the shared build machine has 2 cores).
ls src/nn/cuda/*.cu | xargs -P "${JOBS:-2}" -I{} sh -c \
    '"$NVCC" -std=c++17 -arch=sm_90 -O3 -lineinfo -DCUDNN_WARN_DEPRECATED $NVCC_EXTRA \
        -Xcompiler -Wall,-Wextra,-Werror -Isrc -c "$1" -o "$BUILD/cuda/$(basename "$1" .cu).o"' sh {}
objs=()
for f in src/nn/cuda/*.cu; do objs+=("$BUILD/cuda/$(basename "$f" .cu).o"); done
echo "cuda_build_check: ${#objs[@]} .cu files compiled"
make --no-print-directory -j2 BUILD="$BUILD" MODULES="core nn" EXCLUDE=src/nn/lstm.c "$BUILD/libqtrain.a" >/dev/null
PKG_LIBS=$(pkg-config --libs openblas 2>/dev/null || echo -lopenblas)
PKG_CFLAGS=$(pkg-config --cflags openblas 2>/dev/null || true)
mpicc -std=c11 -Wall -Wextra -Werror -O2 -g -D_GNU_SOURCE -pthread -fopenmp -Isrc $PKG_CFLAGS \
    -DQT_HAVE_CUDA -I"$CUDA_HOME/include" -c tests/test_cuda_layers.c -o "$BUILD/tests/test_cuda_layers.o"
# The C++ objects need libstdc++ (nvcc's host compiler is g++).
mpicc -o "$BUILD/tests/test_cuda_layers" "$BUILD/tests/test_cuda_layers.o" "${objs[@]}" "$BUILD/libqtrain.a" \
    -L"$CUDA_HOME/lib64" -Wl,-rpath,"$CUDA_HOME/lib64" -lcudnn -lcublasLt -lcublas -lcudart -lstdc++ \
    $PKG_LIBS -lcmocka -lm -pthread -fopenmp
echo "cuda_build_check: linked $BUILD/tests/test_cuda_layers"
"$BUILD/tests/test_cuda_layers"
