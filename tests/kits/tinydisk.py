"""A server whose data directory (or a directory in it) is a tiny tmpfs, to fill the disk for real.

Needs root (CI runs as root): `unshare --mount` and `mount -t tmpfs`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
from grpc_health.v1.health_pb2 import HealthCheckRequest
from grpc_health.v1.health_pb2_grpc import HealthStub

from tests.kits.support import ServerProcess


class TinyDiskServer(ServerProcess):
    """`smtpconfig serve` whose data directory is a tmpfs of `size`, mounted in a mount namespace
    made for the server alone (`unshare --mount`): the mount goes away with the server, whatever
    happens to the test. The test reaches into that namespace with `nsenter` to fill the disk and
    free it again; the socket lives outside the tmpfs, where the test can dial it."""

    def __init__(self, base: Path, size: str, *extra: str, env: dict[str, str] | None = None,
                 tiny: str = "") -> None:
        data_dir = base / "data"
        data_dir.mkdir()
        super().__init__(data_dir, "--unix-socket", str(base / "s.sock"), *extra, env=env)
        self.socket = base / "s.sock"
        # The tmpfs: the data directory itself, or `tiny` inside it (such as "audit").
        self.disk = data_dir / tiny if tiny else data_dir
        self.disk.mkdir(exist_ok=True)
        mount = 'mount -t tmpfs -o "size=$1,mode=0700" tmpfs "$2" && shift 2 && exec "$@"'
        self.args = ["unshare", "--mount", "--propagation", "private", "sh", "-c", mount, "sh", size,
                     str(self.disk), *self.args]

    def inside(self, *command: str) -> subprocess.CompletedProcess:
        """Run `command` in the server's mount namespace, where the tmpfs is."""
        assert self.proc is not None
        return subprocess.run(["nsenter", "--target", str(self.proc.pid), "--mount", "--", *command],
                              capture_output=True, text=True, timeout=30)

    @property
    def token(self) -> str:
        return self.inside("cat", str(self.token_path)).stdout.strip()

    def read(self, path: Path) -> bytes:
        """A file as the server sees it (inside the tmpfs, if that is where it is)."""
        assert self.proc is not None
        return subprocess.run(["nsenter", "--target", str(self.proc.pid), "--mount", "--", "cat", str(path)],
                              capture_output=True, timeout=30, check=True).stdout

    def fill(self) -> None:
        """Write a file until the tmpfs has no byte left."""
        filler = self.inside("dd", "if=/dev/zero", f"of={self.disk / 'filler'}", "bs=4096")
        assert "No space left on device" in filler.stderr, filler.stderr
        free = self.inside("df", "--output=avail", str(self.disk)).stdout.split()[-1]
        assert free == "0", f"{free} KiB still free"

    def free(self) -> None:
        removed = self.inside("rm", str(self.disk / "filler"))
        assert removed.returncode == 0, removed.stderr

    def written(self) -> str:
        """Size and modification time of the database and its WAL: they change with every write."""
        files = [str(self.data_dir / name) for name in ("smtpconfig.db", "smtpconfig.db-wal")]
        return self.inside("stat", "--format=%s %y", *files).stdout




def health(target: str, service: str = "") -> int:
    """The health status the server reports for `service`."""
    with grpc.insecure_channel(target) as channel:
        return HealthStub(channel).Check(HealthCheckRequest(service=service), timeout=5).status
