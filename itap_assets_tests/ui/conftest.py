"""Fixtures for the end-to-end UI test: a small demo instance, dagster-webserver on 127.0.0.1, headless Chromium.

Nothing here is skipped: without the browser the tests fail and say how to install it (`.ci/install_browser.sh`).
The browser is driven through chromedriver's W3C WebDriver HTTP API with urllib (no selenium dependency), and all
traffic (webserver, chromedriver, the pages and their requests) stays on 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL_HINT = "run `.ci/install_browser.sh` (installs Debian's chromium and chromium-driver with apt-get)"
LOOPBACK = "127.0.0.1"

# Small and fast: 2 devices × 2 days at 2-minute samples.
DEMO_CONFIG = {"simulation": {"devices": 2, "days": 2, "sample_interval_s": 120}}
DEMO_TIMEOUT_S = 300
WEBSERVER_START_TIMEOUT_S = 90
PAGE_TIMEOUT_S = 60

# Never route the test's own HTTP calls through a proxy from the environment: everything is local.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ui: end-to-end test of the Dagster UI in headless Chromium (slow)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 5.0) -> bytes:
    assert url.startswith(f"http://{LOOPBACK}:"), url
    with _OPENER.open(url, timeout=timeout) as response:
        return response.read()


def stop_process_group(proc: subprocess.Popen, grace_s: float = 15.0) -> None:
    """SIGTERM the process group the child leads (started with start_new_session=True), then SIGKILL."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    # The group may outlive its leader (e.g. the webserver's code server): kill what is left.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if proc.poll() is None:
        proc.wait(timeout=10)


def tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-n:])
    except OSError:
        return "<no log>"


# --- listening sockets, from /proc (no `ss`/`netstat` needed) -------------------------------------------------------


def _proc_listeners() -> dict[int, tuple[str, int]]:
    """inode -> (local ip, port) for every TCP socket in LISTEN state, IPv4 and IPv6."""
    listeners: dict[int, tuple[str, int]] = {}
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] != "0A":  # TCP_LISTEN
                continue
            hex_ip, hex_port = fields[1].split(":")
            raw = bytes.fromhex(hex_ip)
            if v6:
                # Four host-order 32-bit words.
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                ip = socket.inet_ntop(socket.AF_INET6, raw)
            else:
                ip = socket.inet_ntop(socket.AF_INET, raw[::-1])
            listeners[int(fields[9])] = (ip, int(hex_port, 16))
    return listeners


def _group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may contain spaces, so split after the last ')'.
        if int(stat.rsplit(")", 1)[1].split()[2]) == pgid:
            pids.append(int(entry.name))
    return pids


def listening_addresses(pgid: int) -> list[tuple[int, str, int]]:
    """(pid, ip, port) of every TCP socket in LISTEN state held by a process of the group."""
    listeners = _proc_listeners()
    found = []
    for pid in _group_pids(pgid):
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inode = int(target[len("socket:["):-1])
                if inode in listeners:
                    found.append((pid, *listeners[inode]))
    return found


def is_loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip == "::1" or ip.startswith("::ffff:127.")


# --- the demo instance and the webserver ----------------------------------------------------------------------------


@dataclass
class Demo:
    root: Path
    env: dict[str, str]
    config_path: Path
    db_path: Path
    output: str


@dataclass
class Webserver:
    url: str
    port: int
    proc: subprocess.Popen
    log: Path


@pytest.fixture(scope="module")
def browser_binaries() -> tuple[Path, Path]:
    """Checked first, so a machine without the browser fails fast instead of after the demo."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not (p.exists() and os.access(p, os.X_OK))]
    if missing:
        pytest.fail(f"headless browser not installed ({', '.join(missing)} missing): {INSTALL_HINT}", pytrace=False)
    return CHROMIUM, CHROMEDRIVER


@pytest.fixture(scope="module")
def demo(browser_binaries, tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """`python -m itap_assets.demo` into a fresh DAGSTER_HOME / DuckDB file / settings file."""
    root = tmp_path_factory.mktemp("itap_ui_demo")
    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "configs" / "dagster.yaml", home / "dagster.yaml")
    # The operator has already dismissed Dagster's "Join the community" dialog (it would cover the screenshots).
    (home / ".nux").mkdir()
    (home / ".nux" / "nux.yaml").write_text("seen: 1\n", encoding="utf-8")
    config = root / "itap.yaml"
    config.write_text(yaml.safe_dump(DEMO_CONFIG, sort_keys=False), encoding="utf-8")
    db_path = root / "itap.duckdb"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "ITAP_DB_PATH": str(db_path),
        "ITAP_CONFIG": str(config),
        "PYTHONUNBUFFERED": "1",
    }
    # Options the webserver would otherwise read from the environment.
    for key in [k for k in env if k.startswith("DAGSTER_WEBSERVER_")]:
        del env[key]
    try:
        done = subprocess.run(
            [sys.executable, "-m", "itap_assets.demo"],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=DEMO_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"`python -m itap_assets.demo` took more than {DEMO_TIMEOUT_S} s\n{e.stdout or ''}{e.stderr or ''}")
    output = done.stdout + done.stderr
    (root / "demo.log").write_text(output, encoding="utf-8")
    assert done.returncode == 0, f"`python -m itap_assets.demo` failed ({done.returncode}):\n{output[-5000:]}"
    assert db_path.exists(), f"the demo wrote no database at {db_path}:\n{output[-3000:]}"
    return Demo(root=root, env=env, config_path=config, db_path=db_path, output=output)


@pytest.fixture(scope="module")
def webserver(demo: Demo) -> Iterator[Webserver]:
    """dagster-webserver on 127.0.0.1:<free port> against the demo instance; its whole process group is stopped."""
    port = free_port()
    log = demo.root / "webserver.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dagster_webserver", "-h", LOOPBACK, "-p", str(port), "-w", "workspace.yaml"],
            cwd=REPO_ROOT, env=demo.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        url = f"http://{LOOPBACK}:{port}"
        deadline = time.monotonic() + WEBSERVER_START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"dagster-webserver exited with {proc.returncode}:\n{tail(log)}")
            try:
                info = json.loads(http_get(f"{url}/server_info"))
                break
            except (OSError, ValueError):
                if time.monotonic() > deadline:
                    pytest.fail(f"dagster-webserver did not answer /server_info within "
                                f"{WEBSERVER_START_TIMEOUT_S} s:\n{tail(log)}")
                time.sleep(0.5)
        assert info.get("dagster_webserver_version"), info
        yield Webserver(url=url, port=port, proc=proc, log=log)
    finally:
        stop_process_group(proc)


# --- a minimal W3C WebDriver client ---------------------------------------------------------------------------------


class WebDriverError(RuntimeError):
    pass


class Browser:
    """Headless Chromium through chromedriver's W3C HTTP API."""

    def __init__(self, driver_url: str, session_id: str, shots: Path) -> None:
        self.driver_url = driver_url
        self.session_id = session_id
        self.shots = shots

    @staticmethod
    def call(driver_url: str, method: str, path: str, body: dict | None = None, timeout: float = 60.0):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{driver_url}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json; charset=utf-8"})
        try:
            with _OPENER.open(request, timeout=timeout) as response:
                payload = json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")
            raise WebDriverError(f"{method} {path} -> HTTP {e.code}: {detail[:2000]}") from None
        return payload.get("value")

    def _session(self, method: str, path: str, body: dict | None = None):
        return self.call(self.driver_url, method, f"/session/{self.session_id}{path}", body)

    def get(self, url: str) -> None:
        assert url.startswith(f"http://{LOOPBACK}:"), f"the test only browses 127.0.0.1, not {url}"
        self._session("POST", "/url", {"url": url})

    def script(self, source: str, *args):
        return self._session("POST", "/execute/sync", {"script": source, "args": list(args)})

    def text(self) -> str:
        """What a user can read on the page (rendered text, hidden elements excluded)."""
        return self.script("return document.body ? document.body.innerText : '';") or ""

    def wait_for_text(self, *expected: str, absent: tuple[str, ...] = ("Loading...", "Refreshing data…"),
                      timeout: float = PAGE_TIMEOUT_S, name: str = "page") -> str:
        """Poll the rendered text until every expected string is on the page and no loading indicator is left;
        fail with what the page showed instead."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            missing = [e for e in expected if e not in text]
            still = [a for a in absent if a in text]
            if not missing and not still:
                return text
            if time.monotonic() > deadline:
                self.screenshot(f"{name}_timeout.png")
                (self.shots / f"{name}_timeout.txt").write_text(text, encoding="utf-8")
                pytest.fail(f"{name}: after {timeout:.0f} s the page still lacks {missing}"
                            f"{f' and still shows {still}' if still else ''}; it shows:\n{text[:3000]}")
            time.sleep(0.5)

    def table_rows(self) -> list[list[str]]:
        """Every rendered <tr> as its cells' text."""
        return self.script(
            "return Array.from(document.querySelectorAll('tr')).map("
            "tr => Array.from(tr.cells).map(c => c.innerText.trim()));"
        ) or []

    def screenshot(self, filename: str) -> Path:
        png = base64.b64decode(self._session("GET", "/screenshot"))
        path = self.shots / filename
        path.write_bytes(png)
        return path


def chromium_args(profile: Path) -> list[str]:
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-default-apps",
        "--no-proxy-server",
        # No name resolves except the loopback address: the page cannot reach anything else by host name.
        f"--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE {LOOPBACK}",
        "--window-size=1600,1000",
        "--lang=en-US",
        f"--user-data-dir={profile}",
    ]


@pytest.fixture(scope="module")
def browser(browser_binaries, webserver: Webserver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    chromium, chromedriver = browser_binaries
    root = tmp_path_factory.mktemp("itap_ui_browser")
    shots = root / "screenshots"
    shots.mkdir()
    profile = root / "profile"
    profile.mkdir()
    port = free_port()
    driver_url = f"http://{LOOPBACK}:{port}"
    log = root / "chromedriver.log"
    with log.open("wb") as out:
        driver = subprocess.Popen(
            [str(chromedriver), f"--port={port}", f"--allowed-ips={LOOPBACK}", f"--log-path={log}"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "TZ": "UTC"},
        )
    session_id = None
    try:
        deadline = time.monotonic() + 30
        while True:
            if driver.poll() is not None:
                pytest.fail(f"chromedriver exited with {driver.returncode}:\n{tail(log)}")
            try:
                if json.loads(http_get(f"{driver_url}/status"))["value"]["ready"]:
                    break
            except (OSError, ValueError, KeyError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"chromedriver did not start within 30 s:\n{tail(log)}")
            time.sleep(0.2)
        capabilities = {
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "pageLoadStrategy": "normal",
                    "timeouts": {"pageLoad": 60_000, "script": 30_000},
                    "goog:chromeOptions": {"binary": str(chromium), "args": chromium_args(profile)},
                }
            }
        }
        try:
            created = Browser.call(driver_url, "POST", "/session", capabilities, timeout=90)
        except WebDriverError as e:
            pytest.fail(f"could not start headless Chromium ({INSTALL_HINT} if it is missing): {e}")
        session_id = created["sessionId"]
        browser = Browser(driver_url, session_id, shots)
        browser._session("POST", "/window/rect", {"width": 1600, "height": 1000})
        yield browser
    finally:
        if session_id is not None:
            try:
                Browser.call(driver_url, "DELETE", f"/session/{session_id}", timeout=30)
            except (OSError, WebDriverError):
                pass
        stop_process_group(driver, grace_s=5)
