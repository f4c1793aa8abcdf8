"""Helpers of the browser tests (servers in their own process group, Dagster GraphQL, screenshots).

Imported by tests/browser/conftest.py and the test modules (pytest puts this folder on sys.path).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pipelines.params import PROJECT_ROOT

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package (install_chromium.sh)
INSTALL_SCRIPT = Path(__file__).resolve().parent / "install_chromium.sh"
ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "browser"
# Chromium as root on a closed network: no sandbox, no GPU, and none of its own background connections (which
# the network refuses, many at a time). Playwright adds --headless and a fresh --user-data-dir per launch.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--no-proxy-server",
]
VIEWPORT = {"width": 2560, "height": 1600}  # the whole asset graph (28 assets) drawn at a readable zoom
# Requests to our own servers on 127.0.0.1 never go through a proxy the environment may name.
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# --------------------------------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, chars: int = 6000) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return text if len(text) <= chars else "...\n" + text[-chars:]


@dataclass
class Server:
    """A server process started in its own process group; ``stop()`` ends the whole group."""

    name: str
    base_url: str
    log_path: Path
    proc: subprocess.Popen
    workdir: Path
    info: dict = field(default_factory=dict)

    def log_tail(self, chars: int = 6000) -> str:
        return tail(self.log_path, chars)

    def stop(self, grace_s: float = 10.0) -> None:
        """Ctrl+C for the whole group (what a terminal sends; dagster dev shuts its children down on it), then
        SIGTERM, then SIGKILL for whatever is left of the group (code servers, daemons, run workers)."""
        for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGTERM, 5.0)):
            if self.proc.poll() is not None:
                break
            _signal_group(self.proc, sig)
            try:
                self.proc.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                pass
        _signal_group(self.proc, signal.SIGKILL)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # start_new_session=True: the group id is the leader's pid
    except (ProcessLookupError, PermissionError):
        pass


def start_server(
    name: str,
    cmd: list[str],
    *,
    port: int,
    ready_path: str,
    workdir: Path,
    env: dict[str, str],
    cwd: Path = PROJECT_ROOT,
    timeout_s: float = 120.0,
    ready: Callable[[str], str | None] | None = None,
) -> Server:
    """Start ``cmd`` in a new process group, logging to ``workdir/<name>.log``, and wait until
    ``GET http://127.0.0.1:<port><ready_path>`` answers 200 (then, if given, until ``ready(base_url)`` returns
    None; a string it returns is the reason it is not ready yet)."""
    log_path = workdir / f"{name}.log"
    base_url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = Server(name, base_url, log_path, proc, workdir)
    deadline = time.monotonic() + timeout_s
    reason = "no answer yet"
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode} before it was ready")
            try:
                with _LOCAL.open(base_url + ready_path, timeout=5) as resp:
                    reason = None if resp.status == 200 else f"{ready_path} answered {resp.status}"
            except (urllib.error.URLError, OSError) as exc:
                reason = f"{ready_path}: {exc}"
            if reason is None and ready is not None:
                reason = ready(base_url)
            if reason is None:
                return server
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} not ready after {timeout_s:.0f} s: {reason}")
            time.sleep(0.5)
    except BaseException as exc:
        server.stop()
        if not isinstance(exc, Exception):
            raise  # Ctrl+C, pytest-timeout: stop the server and go on stopping
        pytest.fail(
            f"could not start {name} ({' '.join(cmd)}) on {base_url}: {exc}\n--- {log_path} ---\n{server.log_tail()}",
            pytrace=False,
        )


def base_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="1",
        GX_ANALYTICS_ENABLED="false",
        DVC_NO_ANALYTICS="1",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def graphql(base_url: str, query: str, variables: dict | None = None, timeout: float = 10) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    req = urllib.request.Request(base_url + "/graphql", data=body, headers={"Content-Type": "application/json"})
    with _LOCAL.open(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def screenshot(page, artifacts_dir: Path, name: str) -> Path:
    path = artifacts_dir / f"{name}.png"
    page.screenshot(path=str(path))
    return path
