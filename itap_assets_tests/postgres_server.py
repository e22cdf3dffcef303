"""A real PostgreSQL 15 server for tests of the production-shaped instance (configs/dagster_postgres.yaml):
initdb in a temporary data directory, listening on 127.0.0.1 at a free port only, stopped (`pg_ctl stop -m fast`)
and deleted after the session. PostgreSQL refuses to run as root, so under root the server runs as the
`postgres` system user the Debian package creates. Missing binaries fail the test, naming the setup script.

Use: `from itap_assets_tests.postgres_server import postgres_server  # noqa: F401` (the fixture), then
`postgres_server.database("name")` for a fresh database's environment (the ITAP_PG_* variables the config reads).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest

BIN_DIRS = [Path("/usr/lib/postgresql/15/bin")]
SETUP = ".ci/install_postgres.sh"
USER, PASSWORD = "itap", "itap-test"
START_TIMEOUT_S = 60


@dataclass
class PostgresServer:
    host: str
    port: int

    def database(self, name: str) -> dict[str, str]:
        """Create database `name` and return the environment configs/dagster_postgres.yaml reads."""
        con = psycopg2.connect(host=self.host, port=self.port, user=USER, password=PASSWORD, dbname="postgres")
        try:
            con.autocommit = True  # CREATE DATABASE cannot run in a transaction
            with con.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            con.close()
        return {"ITAP_PG_HOST": self.host, "ITAP_PG_PORT": str(self.port), "ITAP_PG_USER": USER,
                "ITAP_PG_PASSWORD": PASSWORD, "ITAP_PG_DB": name}


def binary(name: str) -> str:
    for directory in BIN_DIRS:
        if (directory / name).is_file():
            return str(directory / name)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"PostgreSQL server binary {name} not found in {', '.join(map(str, BIN_DIRS))} or on PATH: "
                    f"run {SETUP} (make test does) to install Debian's postgresql package")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user() -> tuple[list[str], str | None]:
    """The command prefix that runs the server's programs, and the user that owns its files (None: this one)."""
    if os.geteuid() != 0:
        return [], None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail(f"running as root, and there is no postgres user to run PostgreSQL as: run {SETUP}")
    return [shutil.which("runuser") or "runuser", "-u", "postgres", "--"], "postgres"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    initdb, pg_ctl = binary("initdb"), binary("pg_ctl")
    prefix, owner = _as_server_user()
    home = Path(tempfile.mkdtemp(prefix="itap-postgres-"))  # not under pytest's root-only basetemp
    data, log, pwfile = home / "data", home / "server.log", home / "pwfile"
    pwfile.write_text(PASSWORD)
    if owner:
        shutil.chown(home, owner)
        shutil.chown(pwfile, owner)
    port = free_port()

    def run(*args: str) -> None:
        done = subprocess.run([*prefix, *args], capture_output=True, text=True)
        if done.returncode != 0:
            server_log = log.read_text()[-2000:] if log.exists() else ""
            pytest.fail(f"{Path(args[0]).name} failed ({done.returncode}): {done.stderr[-2000:]}\n{server_log}")

    try:
        run(initdb, "-D", str(data), "-U", USER, "--pwfile", str(pwfile), "--auth", "scram-sha-256", "-E", "UTF8",
            "--no-sync")
        run(pg_ctl, "start", "-D", str(data), "-l", str(log), "-w", "-t", str(START_TIMEOUT_S),
            "-o", f"-h 127.0.0.1 -p {port} -k {home} -c fsync=off")
        try:
            yield PostgresServer("127.0.0.1", port)
        finally:
            run(pg_ctl, "stop", "-D", str(data), "-m", "fast", "-w")
    finally:
        shutil.rmtree(home, ignore_errors=True)
