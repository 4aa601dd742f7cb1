"""Where a runnable tritonserver comes from, and the bundled example models.

The binary bundled in the nvidia-pytriton wheel (CPU, Python backend), made
runnable (`embedded_install`), or one found on PATH (e.g. inside NVIDIA's
Triton container on a GPU host). `prepare_repository` copies bundled models
into a model repository of tuner's own, so a user's repository is never changed.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

from tuner.errors import ServerError

BUNDLED_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


@dataclass(frozen=True)
class TritonInstall:
    binary: Path
    backend_dir: Path | None
    env: dict[str, str] = field(default_factory=dict)
    source: str = "embedded"


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tuner"


def embedded_install() -> TritonInstall:
    """The tritonserver bundled in the nvidia-pytriton wheel, made runnable."""
    import importlib.util

    # Located, never imported: only the wheel's files are used, and importing
    # pytriton needs its own client stack (absent where the GPU check installs
    # the wheel alone, scripts/gpu-check.sh).
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServerError(
            "the embedded Triton needs the nvidia-pytriton wheel; run `pip install nvidia-pytriton` "
            "or pass --url to use a running server"
        )
    pkg = Path(list(spec.submodule_search_locations)[0])
    ts = pkg / "tritonserver"
    binary = ts / "bin" / "tritonserver"
    libs = pkg.parent / "nvidia_pytriton.libs"
    pyver = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = ts / "python_backend_stubs" / pyver / "triton_python_backend_stub"
    if not binary.exists() or not stub.exists():
        raise ServerError(
            f"the nvidia-pytriton wheel at {pkg} has no tritonserver for Python {pyver}; "
            "reinstall it with `pip install --force-reinstall nvidia-pytriton`"
        )
    # The Python backend looks for its stub beside libtriton_python.so, and the
    # wheel keeps stubs per Python version elsewhere: assemble a backend folder.
    backend_dir = _cache_dir() / f"backends-py{pyver}-{binary.stat().st_size}"
    py_dir = backend_dir / "python"
    if not (py_dir / "triton_python_backend_stub").exists():
        tmp = backend_dir.with_name(backend_dir.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(ts / "backends", tmp)
        shutil.copy2(stub, tmp / "python" / "triton_python_backend_stub")
        try:
            os.replace(tmp, backend_dir)
        except OSError:  # another process assembled it first
            shutil.rmtree(tmp, ignore_errors=True)
    env = {"LD_LIBRARY_PATH": os.pathsep.join([str(libs), sysconfig.get_config_var("LIBDIR") or ""])}
    return TritonInstall(binary=binary, backend_dir=backend_dir, env=env, source="embedded")


def path_install() -> TritonInstall | None:
    found = shutil.which("tritonserver")
    if not found:
        return None
    return TritonInstall(binary=Path(found), backend_dir=None, env={}, source="path")


def find_install(prefer: str = "auto") -> TritonInstall:
    """prefer: "embedded" (the wheel's binary), "path", or "auto" (PATH first)."""
    if prefer in ("auto", "path"):
        inst = path_install()
        if inst is not None:
            return inst
        if prefer == "path":
            raise ServerError("no tritonserver on PATH; install Triton or use the embedded server")
    return embedded_install()


def server_env(install: TritonInstall) -> dict[str, str]:
    env = dict(os.environ)
    # The Python-backend stub imports numpy through the `python` first on PATH
    # (it ignores PYTHONPATH); with numpy 2 it silently returns empty outputs.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    for key, value in install.env.items():
        env[key] = os.pathsep.join(p for p in [value, env.get(key, "")] if p)
    return env


def with_steps(names: list[str]) -> list[str]:
    """`names` and, after each bundled ensemble, the bundled models its steps run (recursively)."""
    from tuner.config import ensemble_steps, read_config

    out: list[str] = []
    todo = list(names)
    while todo:
        name = todo.pop(0)
        if name in out:
            continue
        out.append(name)
        cfg = BUNDLED_MODELS_DIR / name / "config.pbtxt"
        if cfg.exists():
            todo.extend(ensemble_steps(read_config(cfg)))
    return out


def prepare_repository(dest: Path, names: list[str]) -> Path:
    """Copy bundled models (with a bundled ensemble's steps) into a model repository folder of tuner's own."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in with_steps(names):
        src = BUNDLED_MODELS_DIR / name
        if not (src / "config.pbtxt").exists():
            have = ", ".join(bundled_models())
            raise ServerError(f"no bundled model '{name}'; bundled models are: {have}")
        target = dest / name
        if not target.exists():
            shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__"))
        prepare = getattr(_model_preparers(), "get")(name)
        if prepare is not None:
            prepare(target)
    return dest


def _model_preparers() -> dict:
    preparers = {}
    try:
        from .resnet_onnx import prepare_model_dir

        preparers["resnet"] = prepare_model_dir
    except ImportError:
        pass
    return preparers


def bundled_models() -> list[str]:
    return sorted(p.name for p in BUNDLED_MODELS_DIR.iterdir() if (p / "config.pbtxt").exists())
