"""Build the Lambda assets without Docker.

Two kinds of output, both under ``build/`` at the repository root:

* ``build/layer/python/`` — the shared dependency layer: the runtime dependencies exported from
  ``uv.lock`` (minus what the Lambda runtime already ships), installed as manylinux_2_28 aarch64
  CPython 3.12 wheels (which include manylinux2014 ones), plus the project's own ``expediente``
  package from ``layers/common``.
* ``build/functions/<id>/functions/<id>/`` — one code asset per ``FunctionDef``, laid out as the
  repository's ``functions`` package so the handler string is ``functions.<id>.handler.lambda_handler``
  and a function that runs another domain's rules in-process (``FunctionDef.bundles``) imports them
  as ``functions.<other>`` exactly as it does in the tests.

The install step is the only slow part (it downloads about 15 MB); it is skipped, and uv is not
even needed, when ``build/layer.stamp`` records the same hash of ``uv.lock`` and the install
options (:func:`layer_digest`).
Everything else is recopied on every build, so a synth always ships the current source.

Run as ``python -m infra.build`` or call :func:`build_all`. Raises :class:`BuildError` with the
failing command's output when uv or the install fails.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from infra import definitions

REPO_ROOT = Path(__file__).resolve().parent.parent
BUILD_DIR = REPO_ROOT / "build"
COMMON_PACKAGE = REPO_ROOT / "layers" / "common" / "expediente"
FUNCTIONS_DIR = REPO_ROOT / "functions"

# Provided by the Lambda Python runtime; shipping our own copy would only grow the layer.
RUNTIME_PROVIDED = frozenset({"boto3", "botocore", "s3transfer"})

# The Lambda target (decision 11). Kept in one place so the stamp changes when they do.
# The python3.12 runtime runs on Amazon Linux 2023 (glibc 2.34), so any wheel up to manylinux_2_28
# loads there; some locked packages (Pillow 13, for fpdf2) no longer publish manylinux2014 wheels.
TARGET_PLATFORM = "aarch64-manylinux_2_28"
TARGET_PYTHON = "3.12"

_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "tests", ".pytest_cache", ".mypy_cache")


class BuildError(RuntimeError):
    """A build step failed; the message carries the command and its output."""


@dataclass(frozen=True)
class BuildPaths:
    """Where the assets are. ``layer`` holds ``python/``; ``functions[id]`` holds the ``functions`` package."""

    layer: Path
    functions: dict[str, Path]


def _uv_command() -> list[str]:
    """uv from PATH (or ``$UV``, which ``uv run`` sets), else ``python -m uv`` in this interpreter."""
    found = shutil.which("uv") or os.environ.get("UV")
    if found:
        return [found]
    if importlib.util.find_spec("uv") is not None:
        return [sys.executable, "-m", "uv"]
    raise BuildError("uv not found: put it on PATH or install it in this interpreter (pip install uv)")


def _run(cmd: list[str]) -> str:
    """Run ``cmd`` from the repository root and return stdout; raise BuildError on failure."""
    # Commands are built from fixed arguments and repository paths, never from user input.
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, check=False)  # noqa: S603
    if proc.returncode != 0:
        raise BuildError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def runtime_requirements() -> str:
    """The pinned runtime requirements from ``uv.lock``, without the packages Lambda provides.

    Lines keep their environment markers; uv evaluates them for the target platform.
    """
    exported = _run([
        *_uv_command(), "export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project",
        "--no-header", "--no-annotate",
    ])
    kept = []
    for line in exported.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name = line.split("==", 1)[0].split(";", 1)[0].strip().lower().replace("_", "-")
        if name not in RUNTIME_PROVIDED:
            kept.append(line)
    return "\n".join(kept) + "\n"


# --no-deps: the export is the complete, locked closure.
_INSTALL_OPTIONS = (
    "--python-platform", TARGET_PLATFORM, "--python-version", TARGET_PYTHON,
    "--only-binary", ":all:", "--no-deps",
)


def layer_digest(*, compiled: bool) -> str:
    """Hash of everything that decides the installed dependency tree.

    The lock file, the install options, what the runtime provides and whether bytecode is
    compiled. Computed without running uv, so an up-to-date layer needs no uv at all.
    """
    parts = [
        (REPO_ROOT / "uv.lock").read_text(),
        *_INSTALL_OPTIONS,
        ",".join(sorted(RUNTIME_PROVIDED)),
        f"compiled={compiled}",
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def build_layer(build_dir: Path = BUILD_DIR) -> Path:
    """Build the dependency layer; return the directory that holds ``python/``."""
    layer_dir = build_dir / "layer"
    site = layer_dir / "python"
    # Kept beside the asset, not in it, so they do not end up in the layer zip.
    stamp = build_dir / "layer.stamp"
    req_file = build_dir / "layer-requirements.txt"
    interpreter = _target_interpreter()
    digest = layer_digest(compiled=interpreter is not None)

    if not (stamp.is_file() and stamp.read_text().strip() == digest and site.is_dir()):
        if layer_dir.exists():
            shutil.rmtree(layer_dir)
        site.mkdir(parents=True)
        req_file.write_text(runtime_requirements())
        # uv's pip interface takes the same platform options as `pip install --platform
        # manylinux_2_28_aarch64 --implementation cp --python-version 3.12 --only-binary=:all:`;
        # the project venv has no pip, and uv is already required for the export.
        _run([
            *_uv_command(), "pip", "install", "--quiet", "--target", str(site), *_INSTALL_OPTIONS,
            "-r", str(req_file),
        ])
        # Console scripts are useless in a layer and carry this machine's interpreter path,
        # which would make the asset hash differ from one machine to the next.
        shutil.rmtree(site / "bin", ignore_errors=True)
        _compile_for_target(site, interpreter)
        stamp.write_text(digest + "\n")

    target = site / "expediente"
    if target.exists():
        shutil.rmtree(target)
    if COMMON_PACKAGE.is_dir():
        shutil.copytree(COMMON_PACKAGE, target, ignore=_IGNORED)
    else:
        target.mkdir()
    _compile_for_target(target, interpreter)
    return layer_dir


def build_function(function_id: str, build_dir: Path = BUILD_DIR) -> Path:
    """Copy ``functions/<id>/`` (and the packages it bundles) under ``build/functions/<id>/functions/``.

    Returns the asset directory. Raises BuildError when a folder does not exist: a FunctionDef
    without code would deploy a function that fails on every request.
    """
    declared = {f.id for f in definitions.ALL_FUNCTIONS}
    packages = (function_id, *definitions.function(function_id).bundles) if function_id in declared else (function_id,)
    for package in packages:
        if not (FUNCTIONS_DIR / package).is_dir():
            raise BuildError(f"functions/{package}/ does not exist but infra.definitions declares it")
    asset = build_dir / "functions" / function_id
    if asset.exists():
        shutil.rmtree(asset)
    for package in packages:
        shutil.copytree(FUNCTIONS_DIR / package, asset / "functions" / package, ignore=_IGNORED)
    (asset / "functions" / "__init__.py").write_text("")
    _compile_for_target(asset, _target_interpreter())
    return asset


@functools.cache
def _target_interpreter() -> str | None:
    """A working CPython 3.12: ``$EXPEDIENTE_PYTHON312`` or ``python3.12`` on PATH, else None.

    The candidate is run once, because a version-manager shim can exist on PATH and still fail.
    """
    candidate = os.environ.get("EXPEDIENTE_PYTHON312") or shutil.which(f"python{TARGET_PYTHON}")
    if not candidate:
        return None
    probe = subprocess.run(  # noqa: S603 - fixed arguments
        [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True, text=True, check=False,
    )
    return candidate if probe.returncode == 0 and probe.stdout.strip() == TARGET_PYTHON else None


def _compile_for_target(directory: Path, interpreter: str | None) -> None:
    """Precompile bytecode when a CPython 3.12 interpreter is available.

    Lambda's /var/task and /opt are read-only, so without .pyc files every cold start compiles
    every module (0.6-1 s here). ``unchecked-hash`` pycs stay valid inside the zip, whose file
    times CDK normalises. Without a 3.12 interpreter the step is skipped: SnapStart snapshots the
    initialised function, so the cost is paid once per published version, not per cold start.
    """
    if interpreter is None:
        return
    _run([interpreter, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash",
          str(directory)])


@contextlib.contextmanager
def _exclusive(build_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``build_dir`` (test workers and a synth may build at once)."""
    build_dir.mkdir(parents=True, exist_ok=True)
    with (build_dir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def build_all(build_dir: Path = BUILD_DIR) -> BuildPaths:
    """Build the layer and one asset per function in ``definitions.FUNCTIONS`` and ``IDENTITY_FUNCTIONS``.

    Raises BuildError when uv or the install fails, or a declared function has no folder.
    """
    with _exclusive(build_dir):
        layer = build_layer(build_dir)
        functions = {fn.id: build_function(fn.id, build_dir)
                     for fn in definitions.ALL_FUNCTIONS}
    return BuildPaths(layer=layer, functions=functions)


def main() -> int:
    started = time.perf_counter()
    try:
        paths = build_all()
    except BuildError as exc:
        print(exc, file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - started
    print(f"layer: {os.path.relpath(paths.layer, REPO_ROOT)}")
    for function_id, path in paths.functions.items():
        print(f"function {function_id}: {os.path.relpath(path, REPO_ROOT)}")
    print(f"built in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
