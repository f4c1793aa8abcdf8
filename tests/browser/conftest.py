"""Real-browser tests of the Dagster UI and the MLflow UI: server fixtures, headless Chromium, screenshots.

- Chromium is Debian's (``/usr/bin/chromium``), installed by ``tests/browser/install_chromium.sh`` (the Makefile's
  ``test`` target runs it; the ``chromium_executable`` fixture runs it too when the browser is missing) and driven
  by Playwright for Python. Playwright never downloads a browser of its own here.
- Each server runs in its own process group on 127.0.0.1 and a free port, with its log in the test's tmp dir
  (printed when the test fails); teardown kills the whole group.
- Screenshots go to ``test-artifacts/browser/`` in the repo root (git-ignored) and are kept after the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from browser_support import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    INSTALL_SCRIPT,
    VIEWPORT,
    Server,
    base_env,
    free_port,
    graphql,
    start_server,
    tail,
)

from pipelines.params import PROJECT_ROOT

# Sources the Dagster test stages: JAFFE goes through face detection, CK+48 is pre-cropped (both quick).
DAGSTER_TEST_SOURCES = {"jaffe": "jaffe", "ckplus": "ckplus48"}  # source -> folder under the datasets dir


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def _failed(request) -> bool:
    reports = (getattr(request.node, f"rep_{when}", None) for when in ("setup", "call"))
    return any(report is not None and report.failed for report in reports)


def _stop_and_report(request, server: Server) -> None:
    server.stop()
    if _failed(request):
        # Shown by pytest in the failed test's "Captured stdout teardown" section.
        print(f"\n--- {server.name} log ({server.log_path}) ---\n{server.log_tail(20000)}")


# --------------------------------------------------------------------------------------------------- Dagster


_LOCATIONS = """
{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
    locationOrLoadError { __typename ... on PythonError { message stack } } } } } }
"""


def _dagster_locations_ready(base_url: str) -> str | None:
    """None when every code location has loaded; a reason otherwise. A location that failed to load fails the
    test at once, with Dagster's error."""
    try:
        data = graphql(base_url, _LOCATIONS)["data"]["workspaceOrError"]
    except Exception as exc:  # noqa: BLE001 - the webserver is still starting
        return f"graphql: {exc}"
    entries = data.get("locationEntries") or []
    if not entries:
        return "no code location yet"
    for entry in entries:
        if entry["loadStatus"] != "LOADED":
            return f"code location {entry['name']} is {entry['loadStatus']}"
        error = entry.get("locationOrLoadError") or {}
        if error.get("__typename") == "PythonError":
            raise RuntimeError(
                f"code location {entry['name']} failed to load:\n{error['message']}{''.join(error.get('stack') or [])}"
            )
    return None


def write_test_params(path: Path, raw_root: Path, sources: list[str]) -> Path:
    """The project's params.yaml with another raw root and fewer sources."""
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params["data"]["raw_root"] = str(raw_root)
    params["data"]["sources"] = list(sources)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.fixture
def dagster_env(tmp_path: Path, datasets_dir: Path) -> dict[str, str]:
    """EMOFLOW_* and DAGSTER_HOME for a Dagster instance of the test's own: a temp params file enabling
    JAFFE and CK+48 from a temp raw root of symlinks to the real datasets (nothing is copied)."""
    raw_root = tmp_path / "raw"
    raw_root.mkdir()
    for source, folder in DAGSTER_TEST_SOURCES.items():
        target = datasets_dir / folder
        if not target.is_dir():
            pytest.fail(f"dataset folder {target} missing (source {source})")
        (raw_root / source).symlink_to(target, target_is_directory=True)
    params = write_test_params(tmp_path / "params.yaml", raw_root, list(DAGSTER_TEST_SOURCES))
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    # Runs persist in this instance while the server is up; no telemetry (and no banner about it).
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    home = tmp_path / "emoflow_home"
    home.mkdir()
    return {
        "EMOFLOW_PARAMS": str(params),
        "EMOFLOW_HOME": str(home),
        "DAGSTER_HOME": str(dagster_home),
    }


@pytest.fixture
def dagster_server(request, tmp_path: Path, dagster_env: dict[str, str]):
    """``dagster dev -w workspace.yaml`` (webserver, daemon, code server) on 127.0.0.1:<free port>."""
    port = free_port()
    cmd = [
        sys.executable, "-m", "dagster", "dev",
        "-w", str(PROJECT_ROOT / "workspace.yaml"),
        "-h", "127.0.0.1", "-p", str(port),
    ]  # fmt: skip
    server = start_server(
        "dagster",
        cmd,
        port=port,
        ready_path="/server_info",
        workdir=tmp_path,
        env=base_env(**dagster_env),
        timeout_s=180,
        ready=_dagster_locations_ready,
    )
    server.info.update(dagster_env)
    yield server
    _stop_and_report(request, server)


# --------------------------------------------------------------------------------------------------- MLflow


@pytest.fixture
def mlflow_content(tmp_path: Path) -> dict:
    """An EMOFLOW_HOME whose SQLite store holds experiment "emoflow", two runs and ``emoflow-glow`` (v1 champion,
    v2 candidate), written by runs.tracking in a process of its own (see mlflow_content.py)."""
    home = tmp_path / "emoflow_home"
    home.mkdir()
    out = tmp_path / "mlflow_content.json"
    log = tmp_path / "mlflow_content.log"
    script = Path(__file__).resolve().parent / "mlflow_content.py"
    with open(log, "wb") as fh:
        proc = subprocess.run(
            [sys.executable, str(script), str(home), str(out)],
            cwd=PROJECT_ROOT,
            env=base_env(EMOFLOW_HOME=str(home)),
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=300,
        )
    if proc.returncode != 0 or not out.exists():
        pytest.fail(
            f"writing the MLflow content with runs.tracking failed (exit {proc.returncode}):\n{tail(log)}",
            pytrace=False,
        )
    content = json.loads(out.read_text())
    content["home"] = str(home)
    return content


@pytest.fixture
def mlflow_server(request, tmp_path: Path, mlflow_content: dict):
    """``mlflow server`` on the content's SQLite store, 127.0.0.1:<free port>, one worker."""
    port = free_port()
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", mlflow_content["tracking_uri"],
        "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip
    server = start_server(
        "mlflow",
        cmd,
        port=port,
        ready_path="/health",
        workdir=tmp_path,
        # No job runner and Huey consumers (GenAI server jobs, 8 processes): nothing here uses them.
        env=base_env(EMOFLOW_HOME=mlflow_content["home"], MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),
        timeout_s=120,
    )
    server.info.update(mlflow_content)
    yield server
    _stop_and_report(request, server)


# --------------------------------------------------------------------------------------------------- browser


@pytest.fixture(scope="session")
def chromium_executable() -> Path:
    """Debian's Chromium; installed by install_chromium.sh when missing. Fails (never skips) when it can't be."""
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        proc = subprocess.run(["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=900)
        if proc.returncode != 0 or not CHROMIUM.is_file():
            pytest.fail(
                f"Chromium is required for the browser tests and {CHROMIUM} is missing; "
                f"{INSTALL_SCRIPT.relative_to(PROJECT_ROOT)} failed (exit {proc.returncode}):\n"
                f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}",
                pytrace=False,
            )
    return CHROMIUM


@pytest.fixture(scope="session")
def browser(chromium_executable: Path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        try:
            browser = pw.chromium.launch(executable_path=str(chromium_executable), headless=True, args=CHROMIUM_ARGS)
        except Exception as exc:  # noqa: BLE001
            pytest.fail(f"could not launch {chromium_executable} with Playwright: {exc}", pytrace=False)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def page(request, browser, artifacts_dir: Path):
    """A fresh browser context and page; its console errors and page errors are printed when the test fails,
    and a screenshot of the page at failure is saved as ``<test>-FAILED.png``."""
    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
    context.set_default_timeout(30_000)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(f"console.{msg.type}: {msg.text}") if msg.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
    yield page
    if _failed(request):
        shot = artifacts_dir / f"{request.node.name}-FAILED.png"
        try:
            page.screenshot(path=str(shot), full_page=False)
            print(f"\nscreenshot at failure: {shot}  (url {page.url})")
        except Exception as exc:  # noqa: BLE001
            print(f"\nno screenshot at failure: {exc}")
        if problems:
            print("browser console errors:\n" + "\n".join(problems[-50:]))
    context.close()
