"""Triton Inference Server from the nvidia-pytriton wheel (CPU here, GPU in production).

Assembles the python backend the wheel ships into a layout the server accepts, and loads models on demand.
"""

from __future__ import annotations

import os
import sys
import sysconfig
import urllib.error
import urllib.request
from pathlib import Path

from driftline.compose.stack.process import StackError
from driftline.compose.stack.service import Service
from driftline.settings import REPO_ROOT

STUB_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


def pytriton_root() -> Path | None:
    """The ``tritonserver`` folder inside the installed nvidia-pytriton wheel, or None."""
    try:
        import pytriton
    except ImportError:
        return None
    return Path(pytriton.__file__).resolve().parent / "tritonserver"


def _link(src: Path, dst: Path) -> None:
    if dst.is_symlink() or dst.exists():
        if dst.is_symlink() and Path(os.readlink(dst)) == src:
            return
        dst.unlink()
    dst.symlink_to(src)


class TritonService(Service):
    """Triton Inference Server of the local stack, in explicit model-control mode."""

    name = "triton"
    start_timeout_s = 120.0

    def __init__(self, settings) -> None:
        super().__init__(settings)
        self.stop_grace_s = float(settings.triton.exit_timeout_s) + 5.0

    @property
    def ports(self) -> dict[str, int]:
        """The HTTP, gRPC and metrics ports from settings."""
        t = self.settings.triton
        return {"http": t.http_port, "grpc": t.grpc_port, "metrics": t.metrics_port}

    @property
    def log_file(self) -> Path:
        """The server's own log (``logs/tritonserver.log``)."""
        return self.log_dir / "tritonserver.log"

    @property
    def backend_dir(self) -> Path:
        """The backend folder assembled under the run dir (python backend + stub)."""
        return self.home / "backends"

    def _paths(self) -> tuple[Path, Path, Path]:
        root = pytriton_root()
        if root is None:
            raise StackError(
                "triton: nvidia-pytriton is not installed in this environment (compose/setup.sh)"
            )
        binary = root / "bin" / "tritonserver"
        backend = root / "backends" / "python"
        stub = root / "python_backend_stubs" / STUB_PYTHON / "triton_python_backend_stub"
        for path in (binary, backend, stub):
            if not path.exists():
                raise StackError(f"triton: {path} missing from the nvidia-pytriton wheel")
        return binary, backend, stub

    def check_requirements(self) -> None:
        """Raise StackError if the wheel's files or the model repository are missing."""
        self._paths()
        if not self.settings.triton.repository.is_dir():
            raise StackError(f"triton: model repository {self.settings.triton.repository} does not exist")

    def prepare(self) -> None:
        """Link the wheel's python backend and this Python's stub into the backend folder."""
        _, backend, stub = self._paths()
        python_backend = self.backend_dir / "python"
        python_backend.mkdir(parents=True, exist_ok=True)
        for item in backend.iterdir():
            if item.name != "__pycache__":
                _link(item, python_backend / item.name)
        _link(stub, python_backend / "triton_python_backend_stub")

    def command(self) -> list[str]:
        """The tritonserver command line (loopback addresses, ports and log from settings)."""
        binary, _, _ = self._paths()
        t = self.settings.triton
        return [
            str(binary),
            f"--model-repository={t.repository}",
            "--model-control-mode=explicit",
            f"--backend-directory={self.backend_dir}",
            f"--http-address={self.host}",
            f"--http-port={t.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={t.grpc_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={t.metrics_port}",
            "--allow-gpu-metrics=false",
            "--strict-readiness=false",
            f"--exit-timeout-secs={t.exit_timeout_s}",
            f"--log-file={self.log_file}",
            "--log-info=true",
        ]

    def environment(self) -> dict[str, str]:
        """PATH, LD_LIBRARY_PATH and PYTHONPATH so the python-backend stub finds Python and driftline."""
        env = dict(os.environ)
        venv_bin = str(Path(sys.executable).parent)
        env["PATH"] = os.pathsep.join([venv_bin, env.get("PATH", "")])
        root = pytriton_root()
        libs = [sysconfig.get_config_var("LIBDIR") or ""]
        if root is not None:
            libs.append(str(root.parent.parent / "nvidia_pytriton.libs"))
        if env.get("LD_LIBRARY_PATH"):
            libs.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in libs if p)
        pythonpath = [str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        env["PYTHONPATH"] = os.pathsep.join(pythonpath)
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        return env

    def probe(self) -> str | None:
        """Healthy when ``/v2/health/ready`` answers 200."""
        url = f"http://{self.host}:{self.settings.triton.http_port}/v2/health/ready"
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                if response.status == 200:
                    return None
                return f"/v2/health/ready answered {response.status}"
        except urllib.error.HTTPError as exc:
            return f"/v2/health/ready answered {exc.code}"
        except OSError as exc:
            return f"/v2/health/ready unreachable: {exc}"[:200]
