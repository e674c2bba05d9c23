#!/usr/bin/env bash
# Build llama.cpp's own server and quantizer from the pinned llama-cpp-python sdist (which vendors llama.cpp
# in vendor/llama.cpp, with convert_hf_to_gguf.py). Opt-in (`make setup-llamacpp`): `make test` does not need
# it. Output: build/llamacpp/<version>/{bin/llama-server,bin/llama-quantize,src/...}. Idempotent: a stamp
# keyed on the version (and the cmake flags) skips a finished build. Prints its time (13-27 min measured on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION="${LLAMACPP_VERSION:-0.3.36}"
PYTHON="${PYTHON:-python3}"
JOBS="${JOBS:-$(nproc)}"
ROOT="build/llamacpp"
DEST="$ROOT/$VERSION"
CMAKE_FLAGS=(-DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
             -DLLAMA_BUILD_SERVER=ON -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=ON)
STAMP="$DEST/.stamp-$(echo "$VERSION ${CMAKE_FLAGS[*]}" | sha256sum | cut -c1-16)"

if [ -f "$STAMP" ] && [ -x "$DEST/bin/llama-server" ] && [ -x "$DEST/bin/llama-quantize" ]; then
  echo "[setup-llamacpp] llama.cpp from llama-cpp-python==$VERSION is built ($DEST/bin)"
  exit 0
fi

command -v cmake >/dev/null || { echo "error: cmake not found (apt-get install cmake)" >&2; exit 2; }
command -v g++ >/dev/null || { echo "error: g++ not found (apt-get install g++)" >&2; exit 2; }

t0=$SECONDS
mkdir -p "$ROOT/sdist"
sdist=$(ls "$ROOT"/sdist/llama_cpp_python-"$VERSION".tar.gz 2>/dev/null || true)
if [ -z "$sdist" ]; then
  echo "[setup-llamacpp] downloading llama-cpp-python==$VERSION (sdist, ~76 MB) ..."
  # --no-binary for this package only: with :all: pip would also build its build backends from source.
  "$PYTHON" -m pip download -q --disable-pip-version-check --no-deps --no-binary llama-cpp-python \
    -d "$ROOT/sdist" "llama-cpp-python==$VERSION" 2>&1 | { grep -v 'is ignored: it is neither' || true; }
  [ "${PIPESTATUS[0]}" = 0 ] || { echo "error: pip download llama-cpp-python==$VERSION failed" >&2; exit 1; }
  sdist=$(ls "$ROOT"/sdist/llama_cpp_python-"$VERSION".tar.gz)
fi

rm -rf "$DEST"
mkdir -p "$DEST"
echo "[setup-llamacpp] unpacking $sdist ..."
tar -xzf "$sdist" -C "$DEST"
mv "$DEST/llama_cpp_python-$VERSION/vendor/llama.cpp" "$DEST/src"
rm -rf "$DEST/llama_cpp_python-$VERSION"

echo "[setup-llamacpp] cmake (${CMAKE_FLAGS[*]}) ..."
cmake -S "$DEST/src" -B "$DEST/cmake" "${CMAKE_FLAGS[@]}" >"$DEST/cmake.log" 2>&1 \
  || { tail -20 "$DEST/cmake.log" >&2; echo "error: cmake configure failed (log: $DEST/cmake.log)" >&2; exit 1; }
echo "[setup-llamacpp] building llama-server and llama-quantize with $JOBS job(s) ..."
cmake --build "$DEST/cmake" --target llama-server llama-quantize -j "$JOBS" >"$DEST/build.log" 2>&1 \
  || { tail -20 "$DEST/build.log" >&2; echo "error: build failed (log: $DEST/build.log)" >&2; exit 1; }

# bin/ holds the executables and the shared libraries they load (run with LD_LIBRARY_PATH=bin).
mkdir -p "$DEST/bin"
cp -a "$DEST/cmake/bin/." "$DEST/bin/"
find "$DEST/cmake" -name '*.so*' -exec cp -a {} "$DEST/bin/" \;
"$DEST/bin/llama-server" --version >/dev/null 2>&1 || LD_LIBRARY_PATH="$DEST/bin" "$DEST/bin/llama-server" --version
touch "$STAMP"
echo "[setup-llamacpp] llama.cpp ready in $((SECONDS - t0)) s ($DEST/bin; CPU flags: $(grep -o -w -E 'avx2|avx512f|fma|f16c|avx_vnni|amx_tile' /proc/cpuinfo | sort -u | tr '\n' ' '))"
