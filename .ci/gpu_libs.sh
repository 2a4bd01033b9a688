#!/usr/bin/env bash
# Build a venv the way docker/Dockerfile's build-gpu stage builds /opt/venv (this machine's local wheels and pip
# constraints ignored, as in a docker build), then check that ONNX Runtime's CUDA provider resolves every library
# it needs on the image's LD_LIBRARY_PATH, and that the check fails on a mismatched CUDA setup (a CUDA 12.6
# runtime, as the image's former CUDA 12.6 base image had).
# By default the venv gets the image's onnxruntime-gpu[cuda,cudnn] with the nvidia-* versions that torch 2.13
# pins (what pip resolves in the image), without torch itself: ~1.5 GB of wheels instead of ~4.5 GB.
# KF_GPU_CHECK_FULL=1 installs exactly the image's two pip commands, torch included (~10 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${KF_GPU_VENV:-/tmp/kf-ci-gpu-venv}"
cuda12="${venv}-cuda12"
start=$SECONDS
rm -rf "$venv" "$cuda12"
python3.11 -m venv "$venv"
image_pip() { env -u PIP_FIND_LINKS -u PIP_CONSTRAINT PIP_CONFIG_FILE=/dev/null "$venv/bin/pip" "$@"; }
if [ "${KF_GPU_CHECK_FULL:-0}" = 1 ]; then
    image_pip install -q torch==2.13.0
    image_pip install -q -e ".[gpu,s3]"
else
    # torch's CUDA wheels as constraints (metadata only, nothing large is downloaded for this step)
    image_pip install -q --dry-run --ignore-installed --report "$venv.torch.json" torch==2.13.0
    python3.11 -c 'import json, sys
for i in json.load(open(sys.argv[1]))["install"]:
    m = i["metadata"]
    if m["name"].startswith(("nvidia-", "cuda-")):
        print(m["name"] + "==" + m["version"])' "$venv.torch.json" >"$venv.constraints.txt"
    ort=$(python3.11 -c 'import tomllib; print(tomllib.load(open("pyproject.toml","rb"))["project"]["optional-dependencies"]["gpu"][0])')
    image_pip install -q -c "$venv.constraints.txt" "$ort"
fi
echo "gpu venv built in $((SECONDS - start)) s"
python3.11 .ci/check_gpu_libs.py --venv "$venv"

image_pip install -q --target "$cuda12" "nvidia-cuda-runtime-cu12==12.6.*"
if python3.11 .ci/check_gpu_libs.py --venv "$venv" --lib-path "$cuda12/nvidia/cuda_runtime/lib" >"$cuda12.log" 2>&1; then
    cat "$cuda12.log"
    echo "the GPU library check passed on a CUDA 12.6 runtime: it no longer tells a mismatch" >&2
    exit 1
fi
echo "on a CUDA 12.6 runtime the check fails, as it must:"
grep -E "not found" "$cuda12.log" | head -4
rm -rf "$venv" "$cuda12" "$cuda12.log" "$venv.torch.json" "$venv.constraints.txt"
echo "gpu library check done in $((SECONDS - start)) s"
