"""An acknowledged write survives kill -9 of the server; a restart serves it."""

from __future__ import annotations

import shutil

from smtpconfig.v2 import config_service_pb2 as v2
from smtpconfig.v2 import config_service_pb2_grpc as v2_grpc
from tests.kits.profiles import BASIC_V2, edit, v2_profile
from tests.kits.support import ServerProcess, short_dir


def test_acknowledged_update_survives_kill_9() -> None:
    data_dir = short_dir() / "data"
    server = ServerProcess(data_dir).start()
    try:
        acknowledged = None
        with server.channel() as channel:
            stub = v2_grpc.ConfigServiceStub(channel)
            for port in range(2500, 2520):
                doc = edit(BASIC_V2, Port=port, RelayPassword={"SecretValue": f"pw-{port}"})
                acknowledged = stub.UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(doc)))
        server.kill9()  # straight after the last acknowledgement: no chance to flush or close
        assert server.proc.returncode == -9

        restarted = ServerProcess(data_dir).start()  # also proves the stale socket and lock are handled
        try:
            with restarted.channel() as channel:
                reply = v2_grpc.ConfigServiceStub(channel).GetSmtp(v2.GetSmtpRequest())
            assert reply.etag == acknowledged.etag
            assert reply.profile.port == 2519
            assert reply.profile.relay_password.has_value
        finally:
            assert restarted.terminate() == 0
    finally:
        server.terminate()
        shutil.rmtree(data_dir.parent, ignore_errors=True)


def test_concurrent_writers_then_kill_9_keep_every_acknowledged_revision() -> None:
    """Many writes in flight at the kill: whatever was acknowledged last is what comes back."""
    from concurrent.futures import ThreadPoolExecutor

    data_dir = short_dir() / "data"
    server = ServerProcess(data_dir).start()
    try:
        with server.channel() as channel:
            stub = v2_grpc.ConfigServiceStub(channel)

            def write(port: int):
                return stub.UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(edit(BASIC_V2, Port=port))))

            with ThreadPoolExecutor(max_workers=8) as pool:
                replies = list(pool.map(write, range(3000, 3040)))
        server.kill9()
        newest = max(replies, key=lambda r: int(r.etag.split("-")[0], 16))
        restarted = ServerProcess(data_dir).start()
        try:
            with restarted.channel() as channel:
                reply = v2_grpc.ConfigServiceStub(channel).GetSmtp(v2.GetSmtpRequest())
            assert (reply.etag, reply.profile.port) == (newest.etag, newest.profile.port)
        finally:
            restarted.terminate()
    finally:
        server.terminate()
        shutil.rmtree(data_dir.parent, ignore_errors=True)
