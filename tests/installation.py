"""An installation of several ``xueliang serve`` processes sharing one database, as tests
run it: each node a real process (``python -m cli.main serve --role ROLE``), started and
stopped by the test, with its log printed when the test failed."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography.fernet import Fernet

from tests.conftest import free_port


@dataclass
class Node:
    """One ``xueliang serve`` process."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    media: tuple[int, int] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


class Installation:
    """The processes of one installation: one database, one key, one object store."""

    def __init__(self, db_url: str, root: Path, token: str, lease_s: float) -> None:
        self.root = root
        self.nodes: list[Node] = []
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("XUELIANG_")}
        self.env.update(
            {
                "XUELIANG_DATABASE__URL": db_url,
                "XUELIANG_SECRETS__CAMERA_KEY": Fernet.generate_key().decode(),
                "XUELIANG_STORAGE__LOCAL__PATH": str(root / "objects"),
                "XUELIANG_AUTH__BOOTSTRAP_TOKEN": token,
                "XUELIANG_WORKERS__LEASE_S": str(lease_s),
                "XUELIANG_INGEST__BACKOFF_INITIAL_S": "0.5",
                "XUELIANG_INGEST__BACKOFF_MAX_S": "2",
                # Webhook receivers of these tests listen on loopback.
                "XUELIANG_EGRESS__ALLOW": "127.0.0.0/8",
            }
        )

    def start(
        self,
        name: str,
        role: str,
        env: dict[str, str] | None = None,
        media: tuple[int, int] | None = None,
        module: str = "cli.main",
    ) -> Node:
        """Start a node; ``env`` adds to the installation's settings, ``module`` is what
        ``python -m`` runs (a test's launcher may wrap ``cli.main``)."""
        port = free_port()
        node_env = {**self.env, "XUELIANG_DATA_DIR": str(self.root / name), **(env or {})}
        log = self.root / f"{name}.log"
        command = [sys.executable, "-m", module, "serve", "--role", role, "--port", str(port)]
        with log.open("wb") as out:
            process = subprocess.Popen(command, env=node_env, stdout=out, stderr=subprocess.STDOUT)
        node = Node(name, process, port, log, media)
        self.nodes.append(node)
        return node

    def close(self, failed: bool) -> None:
        for node in self.nodes:
            if node.process.poll() is None:
                node.process.terminate()
        for node in self.nodes:
            try:
                node.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait()
            if failed:  # what each process said, for whoever reads the failure
                tail = node.log.read_text(errors="replace")[-4000:]
                print(f"\n----- {node.name} (exit {node.process.returncode}) -----\n{tail}")


def pid_of(holder_or_worker_id: str | None) -> int | None:
    """The PID in a lease holder's or a worker's ID (``host:pid:random``)."""
    if not holder_or_worker_id:
        return None
    return int(holder_or_worker_id.split(":")[-2])
