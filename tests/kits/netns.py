"""Run a test scenario inside a network namespace of its own, where forbidden addresses can be
dialled without a packet leaving the machine.

`run(function, *args, addresses=..., names=...)` starts a fresh interpreter under
``unshare --net --mount`` (CI runs as root), and there:

- brings up the namespace's loopback interface, its only interface, and puts `addresses` on it
  (169.254.169.254, a 6to4 or Teredo address, ...), so a test can listen on them and see whether
  anything connected;
- with `names`, runs a DNS server on 127.0.0.1:53 and bind-mounts a resolv.conf naming it over
  /etc/resolv.conf (in this mount namespace only). `names` maps a name to the answers of its
  successive lookups: ``{"idp.test": [["127.0.0.1"], ["169.254.169.254"]]}`` answers the first
  lookup with 127.0.0.1 and every later one with 169.254.169.254 (DNS rebinding). Other names are
  NXDOMAIN. Answers have TTL 0.
- calls ``function(*args)`` (a module-level function, found again by module and name) and hands
  back its JSON-serialisable result. The function's exceptions fail the caller's test with the
  namespace's output.
"""

from __future__ import annotations

import importlib
import ipaddress
import json
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from typing import Any

from tests.kits.support import ROOT

RESULT = "NETNS-RESULT "


def run(function: Callable[..., Any], *args: Any, addresses: tuple[str, ...] = (),
        names: dict[str, list[list[str]]] | None = None, timeout: float = 120) -> Any:
    spec = {"module": function.__module__, "function": function.__name__, "args": list(args),
            "addresses": list(addresses), "names": names}
    done = subprocess.run(
        ["unshare", "--net", "--mount", sys.executable, "-m", "tests.kits.netns", json.dumps(spec)],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
    if done.returncode != 0 or not lines:
        raise AssertionError(f"the scenario in the namespace failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return json.loads(lines[-1][len(RESULT):])


def _inside(spec: dict[str, Any]) -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    for address in spec["addresses"]:
        prefix = 32 if ipaddress.ip_address(address).version == 4 else 128
        subprocess.run(["ip", "addr", "add", f"{address}/{prefix}", "dev", "lo"], check=True)
    if spec["names"] is not None:
        DnsServer(spec["names"]).start()
        conf = tempfile.NamedTemporaryFile("w", suffix=".resolv.conf", delete=False)
        conf.write("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        conf.close()
        subprocess.run(["mount", "--bind", conf.name, "/etc/resolv.conf"], check=True)
    function = getattr(importlib.import_module(spec["module"]), spec["function"])
    result = function(*spec["args"])
    print(RESULT + json.dumps(result), flush=True)


class DnsServer:
    """A DNS server on 127.0.0.1:53 (UDP) answering A and AAAA queries from a script; see the
    module docstring. Only what glibc's stub resolver asks is understood."""

    def __init__(self, names: dict[str, list[list[str]]]) -> None:
        self._names = {name.lower().rstrip("."): steps for name, steps in names.items()}
        self._lookups: dict[str, int] = {}
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 53))

    def start(self) -> None:
        threading.Thread(target=self._serve, name="netns-dns", daemon=True).start()

    def _serve(self) -> None:
        while True:
            query, peer = self._sock.recvfrom(4096)
            try:
                self._sock.sendto(self._answer(query), peer)
            except (IndexError, struct.error, UnicodeDecodeError):
                continue  # not a query this server understands: no answer

    def _answer(self, query: bytes) -> bytes:
        ident, flags = struct.unpack("!HH", query[:4])
        labels, at = [], 12
        while query[at]:
            labels.append(query[at + 1:at + 1 + query[at]].decode("ascii"))
            at += 1 + query[at]
        qtype, _ = struct.unpack("!HH", query[at + 1:at + 5])
        question = query[12:at + 5]
        name = ".".join(labels).lower()
        steps = self._names.get(name)
        rd = flags & 0x0100
        if steps is None:
            return struct.pack("!HHHHHH", ident, 0x8080 | rd | 3, 1, 0, 0, 0) + question  # NXDOMAIN
        if qtype == 1:  # A: a lookup; the next one gets the next step
            self._lookups[name] = self._lookups.get(name, 0) + 1
        step = steps[min(max(self._lookups.get(name, 1), 1), len(steps)) - 1]
        family = {1: socket.AF_INET, 28: socket.AF_INET6}.get(qtype)
        wanted = [a for a in step if family and ipaddress.ip_address(a).version == (4 if qtype == 1 else 6)]
        records = b"".join(
            struct.pack("!HHHIH", 0xC00C, qtype, 1, 0, len(packed)) + packed
            for packed in (socket.inet_pton(family, a) for a in wanted)  # type: ignore[arg-type]
        )
        return struct.pack("!HHHHHH", ident, 0x8080 | rd, 1, len(wanted), 0, 0) + question + records


class Trap:
    """A TCP listener on an address that must never be dialled: it records each connection and
    the first bytes it receives, then closes it."""

    def __init__(self, address: str, port: int = 0) -> None:
        family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((address, port))
        self._sock.listen(16)
        self.port: int = self._sock.getsockname()[1]
        self.received: list[bytes] = []
        threading.Thread(target=self._serve, name=f"trap-{address}", daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    self.received.append(conn.recv(65536))
                except OSError:
                    self.received.append(b"")

    def close(self) -> None:
        self._sock.close()


if __name__ == "__main__":
    _inside(json.loads(sys.argv[1]))
