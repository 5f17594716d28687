"""A Flower deployment on loopback: SuperLink + SuperNodes with TLS and SuperNode auth.

Runs the same ServerApp/ClientApp as the simulation, on the Deployment Engine. Every process
is started in its own session and stopped by PID together with its descendants (the
SuperExec and ``flwr-clientapp`` children), also when the run fails.

Usage::

    python -m scripts.deploy.local_deployment --supernodes 3 --run-config "local.epochs=10"

The Python API (:class:`LocalDeployment`) is what ``tests/integration`` use.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from free_common import signing
from free_common.tls import DeploymentMaterial, write_deployment_material
from scripts.deploy.proctree import stop_pids

logger = logging.getLogger("scripts.deploy")

REPO = Path(__file__).resolve().parents[2]
CONNECTION = "freefed-tls"
OFFLINE_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
}


class DeploymentError(RuntimeError):
    """A process did not start, exited early or a CLI step failed."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_tree(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Stop ``proc`` and every descendant (SIGTERM, then SIGKILL after ``timeout``)."""
    stop_pids([proc.pid], timeout)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


@dataclass
class LocalDeployment:
    """SuperLink + SuperNodes on 127.0.0.1 with TLS and (optionally) SuperNode auth.

    Args:
        work_dir: certificates, Flower home, databases and logs go here.
        bin_dir: directory with ``flower-superlink``, ``flower-supernode`` and ``flwr``
            (default: next to the running interpreter).
        supernode_auth: start the SuperLink with ``--enable-supernode-auth``.
    """

    work_dir: Path
    bin_dir: Path = field(default_factory=lambda: Path(sys.executable).parent)
    supernode_auth: bool = True
    port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    material: DeploymentMaterial | None = None

    def __post_init__(self) -> None:
        self.work_dir = Path(self.work_dir).resolve()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.flwr_home = self.work_dir / "flwr-home"
        self.logs = self.work_dir / "logs"
        self.logs.mkdir(exist_ok=True)

    # ------------------------------------------------------------------ helpers
    @property
    def env(self) -> dict[str, str]:
        """Environment for every process: offline switches, our venv first on PATH."""
        env = dict(os.environ)
        env.update(OFFLINE_ENV)
        env["FLWR_HOME"] = str(self.flwr_home)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONPATH"] = f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}"
        return env

    def _tool(self, name: str) -> str:
        path = self.bin_dir / name
        if not path.exists():
            found = shutil.which(name)
            if not found:
                raise DeploymentError(f"{name} not found in {self.bin_dir} or on PATH")
            return found
        return str(path)

    def _spawn(self, name: str, cmd: Sequence[str]) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        logger.info("starting %s: %s", name, " ".join(cmd))
        proc = subprocess.Popen(
            list(cmd),
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.work_dir,
            start_new_session=True,
        )
        log.close()
        self.procs[name] = proc
        logger.info("%s PID %d (log %s)", name, proc.pid, self.logs / f"{name}.log")
        return proc

    def log_text(self, name: str) -> str:
        """Everything process ``name`` has logged so far."""
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # ------------------------------------------------------------------ steps
    def make_material(self, supernodes: int) -> DeploymentMaterial:
        """CA, SuperLink certificate (SAN 127.0.0.1, localhost) and SuperNode key pairs."""
        self.material = write_deployment_material(
            self.work_dir / "certs", hosts=["127.0.0.1", "localhost"], supernodes=supernodes
        )
        self._write_flwr_config()
        return self.material

    def _write_flwr_config(self) -> None:
        assert self.material is not None
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        (self.flwr_home / "config.toml").write_text(
            "[superlink]\n"
            f'default = "{CONNECTION}"\n\n'
            f"[superlink.{CONNECTION}]\n"
            f'address = "127.0.0.1:{self.port}"\n'
            f'root-certificates = "{self.material.ca_cert}"\n'
        )

    def start_superlink(self, timeout: float = 60.0) -> None:
        """Start the SuperLink with TLS and wait until it accepts connections."""
        assert self.material is not None, "call make_material first"
        cmd = [
            self._tool("flower-superlink"),
            "--ssl-ca-certfile", str(self.material.ca_cert),
            "--ssl-certfile", str(self.material.server_cert),
            "--ssl-keyfile", str(self.material.server_key),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--database", str(self.work_dir / "superlink.db"),
            "--isolation", "subprocess",
            "--disable-runtime-dependency-installation",
        ]  # fmt: skip
        if self.supernode_auth:
            cmd.append("--enable-supernode-auth")
        proc = self._spawn("superlink", cmd)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise DeploymentError(f"SuperLink exited: {self.log_text('superlink')[-2000:]}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 1),
            ):
                time.sleep(1.0)
                return
            time.sleep(0.5)
        raise DeploymentError(f"SuperLink did not listen on {self.port} within {timeout} s")

    def register(self, public_key: Path) -> None:
        """``flwr supernode register`` a SuperNode's public key."""
        out = subprocess.run(
            [self._tool("flwr"), "supernode", "register", str(public_key), CONNECTION],
            env=self.env, capture_output=True, text=True, timeout=120, cwd=self.work_dir,
        )  # fmt: skip
        if out.returncode != 0:
            raise DeploymentError(f"register {public_key} failed: {out.stdout}{out.stderr}")
        logger.info("registered SuperNode key %s", public_key.name)

    def start_supernode(
        self, index: int, node_config: str, *, private_key: Path | None = None
    ) -> subprocess.Popen[bytes]:
        """Start SuperNode ``index`` with its key and node config (own ClientApp IO port)."""
        assert self.material is not None
        key = private_key or self.material.supernode_keys[index][0]
        cmd = [
            self._tool("flower-supernode"),
            "--superlink", f"127.0.0.1:{self.port}",
            "--root-certificates", str(self.material.ca_cert),
            "--auth-supernode-private-key", str(key),
            "--host", "127.0.0.1",
            "--port", str(free_port()),
            "--isolation", "subprocess",
            "--node-config", node_config,
            "--max-retries", "3",
        ]  # fmt: skip
        return self._spawn(f"supernode-{index}", cmd)

    def run_app(
        self,
        run_config: str,
        *,
        timeout: float = 900.0,
        app_dir: Path = REPO,
    ) -> subprocess.CompletedProcess[str]:
        """``flwr run APP_DIR <connection> --stream`` and wait for the run to end."""
        cmd = [self._tool("flwr"), "run", str(app_dir), CONNECTION, "--stream"]
        if run_config:
            cmd += ["--run-config", run_config]
        logger.info("flwr run: %s", " ".join(cmd))
        return subprocess.run(
            cmd, env=self.env, capture_output=True, text=True, timeout=timeout, cwd=self.work_dir
        )

    def start_app(self, run_config: str, *, app_dir: Path = REPO) -> subprocess.Popen[bytes]:
        """Start ``flwr run ... --stream`` in the background (log: ``logs/flwr-run.log``)."""
        cmd = [self._tool("flwr"), "run", str(app_dir), CONNECTION, "--stream"]
        if run_config:
            cmd += ["--run-config", run_config]
        return self._spawn("flwr-run", cmd)

    def stop(self, name: str | None = None) -> None:
        """Stop one process (with its descendants) or, by default, all, SuperNodes first."""
        names = [name] if name else sorted(self.procs, key=lambda n: n == "superlink")
        for n in names:
            proc = self.procs.pop(n, None)
            if proc is not None:
                logger.info("stopping %s (PID %d)", n, proc.pid)
                stop_tree(proc)

    @contextlib.contextmanager
    def running(self) -> Iterator[LocalDeployment]:
        """Context manager that always stops every process it started."""
        try:
            yield self
        finally:
            self.stop()


def owner_keys(out_dir: Path, owner_ids: Sequence[str]) -> tuple[dict[str, Path], Path]:
    """Ed25519 signing keys for ``owner_ids`` and the server's key registry file.

    Returns:
        ``({owner_id: private key path}, registry path)``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    owners: dict[str, str] = {}
    for owner in owner_ids:
        private_pem, public_raw = signing.generate_keypair()
        path = out_dir / f"{owner}.ed25519.pem"
        path.write_bytes(private_pem)
        os.chmod(path, 0o600)
        paths[owner] = path
        owners[owner] = public_raw.hex()
    registry = out_dir / "key-registry.json"
    registry.write_text(json.dumps({"owners": owners}, indent=2))
    return paths, registry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="FREE-Fed on a loopback Flower deployment")
    parser.add_argument("--supernodes", type=int, default=3)
    parser.add_argument("--work-dir", type=Path, default=REPO / "runs" / "deploy")
    parser.add_argument("--run-config", default="")
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from client.partitions import owner_id_for
    from free_common.data.sources import ASSETS_DIR

    dep = LocalDeployment(args.work_dir)
    n = args.supernodes
    material = dep.make_material(n)
    keys, registry = owner_keys(dep.work_dir / "owner-keys", [owner_id_for(i) for i in range(n)])
    with dep.running():
        dep.start_superlink()
        for _, public in material.supernode_keys:
            dep.register(public)
        for i in range(n):
            dep.start_supernode(
                i,
                f'partition-id={i} num-partitions={n} signing-key="{keys[owner_id_for(i)]}"',
            )
        run_config = (
            f'data.assets-dir="{ASSETS_DIR}" out.dir="{dep.work_dir / "out"}" '
            f'fed.min-nodes={n} fed.key-registry="{registry}" fed.demo-key-secret="" '
            f"{args.run_config}"
        )
        result = dep.run_app(run_config, timeout=args.timeout)
        print(result.stdout[-20000:])
        print(result.stderr[-5000:], file=sys.stderr)
        summary = dep.work_dir / "out" / "RESULT.txt"
        if summary.exists():
            print(summary.read_text())
            return 0
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
