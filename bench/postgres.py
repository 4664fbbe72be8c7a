"""A throwaway PostgreSQL server for the job store's benchmark and tests: ``initdb`` of the
installed PostgreSQL (Debian's ``postgresql`` package) in a temporary folder, the server on
a free port of 127.0.0.1, removed when stopped."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bindir() -> Path | None:
    """The newest PostgreSQL server binaries of Debian's packages (``postgresql-NN``), else
    the ones on PATH."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class LocalPostgres:
    """A throwaway PostgreSQL cluster: ``initdb`` in a temporary folder, the server on a free
    port of 127.0.0.1 (trust auth, no fsync: the tests kill impasto, not the database).
    PostgreSQL refuses to run as root, so as root it runs as the ``postgres`` user the
    Debian package creates."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.user: str | None = None
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            self.user = "postgres"
        self.root = Path(tempfile.mkdtemp(prefix="impasto-pg-"))
        self.data = self.root / "data"
        self.proc: subprocess.Popen | None = None
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        done = subprocess.run(
            args, user=self.user, capture_output=True, text=True, cwd=self.root, check=False
        )
        if done.returncode:
            raise RuntimeError(f"{' '.join(args)} failed:\n{done.stdout}{done.stderr}")

    def start(self, timeout: float = 60) -> LocalPostgres:
        if self.user is not None:
            shutil.chown(self.root, self.user)
        self._run(
            str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
            "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C",
        )  # fmt: skip
        self._log = (self.root / "postgres.log").open("wb")
        command = [
            str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
            "-h", "127.0.0.1", "-k", str(self.root), "-c", "fsync=off",
            "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
            "-c", "max_connections=300",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            command,
            user=self.user,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.root,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited:\n{self.logs()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    pass
                if b"ready to accept connections" in (self.root / "postgres.log").read_bytes():
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres not up after {timeout} s:\n{self.logs()}")
            time.sleep(0.1)

    def logs(self) -> str:
        return (self.root / "postgres.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # PostgreSQL's fast shutdown
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close() if hasattr(self, "_log") else None
        shutil.rmtree(self.root, ignore_errors=True)
