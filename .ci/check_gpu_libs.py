"""Check, without a GPU, that the gpu image's CUDA libraries resolve: every shared library that ONNX Runtime's
CUDA provider (and torch's CUDA library) needs is found on the library path the image sets.

    python .ci/check_gpu_libs.py --venv /tmp/kf-gpu-venv                      # the image's own path: must pass
    python .ci/check_gpu_libs.py --venv /tmp/kf-gpu-venv --lib-path /other    # another CUDA setup

The venv must be built the way docker/Dockerfile's build-gpu stage builds /opt/venv (same pip installs).
``--lib-path`` defaults to the image's LD_LIBRARY_PATH (read from the Dockerfile, /opt/venv swapped for --venv).
A dependency counts as resolved only when the dynamic loader finds it inside the image: in a directory of that
path, in the venv (torch's RPATH points into it), or among the base system's C/C++ runtime libraries. libcuda.so.1
is the driver's: the NVIDIA container toolkit mounts it from the host at run time, so it may be missing here.
ldd sees only link-time dependencies; the libraries ONNX Runtime opens itself at run time (cuDNN, cuFFT) are
checked by name and then checked like the others.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

DRIVER = {"libcuda.so.1", "libnvidia-ml.so.1"}  # mounted from the host by the NVIDIA container toolkit
# The base image's own runtime (Debian: libc6, libstdc++6, libgcc-s1, zlib1g), present in python:*-slim too.
SYSTEM = re.compile(r"^(libc|libm|libdl|librt|libpthread|libutil|libstdc\+\+|libgcc_s|libz|ld-linux-x86-64)\.so")
DLOPENED = ("libcudnn.so.9", "libcufft.so.12")  # opened by the CUDA provider at run time, not linked


def image_lib_path(dockerfile: Path, venv: Path) -> list[Path]:
    """The gpu target's LD_LIBRARY_PATH from the Dockerfile, with /opt/venv replaced by ``venv``."""
    text = dockerfile.read_text()
    gpu = text[text.index("AS gpu") :]
    match = re.search(r"LD_LIBRARY_PATH=(\S+)", gpu)
    if match is None:
        raise SystemExit(f"{dockerfile}: the gpu target sets no LD_LIBRARY_PATH")
    site = next((venv / "lib").glob("python3*/site-packages"))
    value = match.group(1).replace("${PY_SITE}", str(site)).replace("/opt/venv", str(venv))
    return [Path(p) for p in value.split(":") if p]


def unresolved(lib: Path, lib_path: list[Path], venv: Path) -> list[str]:
    """The dependencies of ``lib`` that the loader does not find inside the image (its path or its venv)."""
    env = {**os.environ, "LD_LIBRARY_PATH": ":".join(map(str, lib_path))}
    out = subprocess.run(["ldd", str(lib)], env=env, capture_output=True, text=True, check=False).stdout
    inside = [*lib_path, venv]
    problems = []
    for line in out.splitlines():
        m = re.match(r"\s*(\S+) => (.*?)(?: \(0x[0-9a-f]+\))?$", line)
        if m is None:
            continue
        name, where = m.groups()
        if name in DRIVER:
            continue
        if where == "not found":
            problems.append(f"{name} not found")
        elif SYSTEM.match(name):
            continue
        elif not any(Path(where).resolve().is_relative_to(d.resolve()) for d in inside):
            problems.append(f"{name} found only outside the image, at {where}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", type=Path, required=True, help="a venv built like the image's /opt/venv")
    parser.add_argument("--dockerfile", type=Path, default=Path(__file__).parent.parent / "docker" / "Dockerfile")
    parser.add_argument("--lib-path", help="colon-separated library path to check instead of the image's")
    args = parser.parse_args()
    site = next((args.venv / "lib").glob("python3*/site-packages"))
    lib_path = (
        [Path(p) for p in args.lib_path.split(":") if p]
        if args.lib_path is not None
        else image_lib_path(args.dockerfile, args.venv)
    )
    print("library path:", ":".join(map(str, lib_path)) or "(empty)")
    provider = site / "onnxruntime" / "capi" / "libonnxruntime_providers_cuda.so"
    targets = [provider, site / "torch" / "lib" / "libtorch_cuda.so"]
    failures: list[str] = []
    for name in DLOPENED:
        found = next((d / name for d in lib_path if (d / name).exists()), None)
        if found is None:
            failures.append(f"{provider.name}: opens {name} at run time, not found on the library path")
        else:
            targets.append(found)
    torch_cuda = site / "torch" / "lib" / "libtorch_cuda.so"
    if not torch_cuda.exists():
        targets.remove(torch_cuda)
        print("torch is not installed in this venv: checking ONNX Runtime's libraries only")
    for lib in targets:
        if not lib.exists():
            failures.append(f"{lib}: missing (is the venv built like the image?)")
            continue
        problems = unresolved(lib, lib_path, args.venv)
        failures += [f"{lib.name}: {p}" for p in problems]
        print(f"{lib.name}: {'ok' if not problems else f'{len(problems)} unresolved'}")
    if failures:
        print("\n".join(["GPU library check FAILED:", *failures]), file=sys.stderr)
        return 1
    print("GPU library check: every library checked above resolves inside the image")
    return 0


if __name__ == "__main__":
    sys.exit(main())
