"""Replicas of smtpconfig on one etcd cluster, started by a test and removed after it, and the
profile calls the cluster tests make through them."""

from __future__ import annotations

import shutil
from pathlib import Path

from smtpconfig.v2 import config_service_pb2 as v2
from smtpconfig.v2 import config_service_pb2_grpc as v2_grpc
from tests.kits.etcd import EtcdCluster, new_prefix, replica_settings, write_key_file
from tests.kits.profiles import v2_profile
from tests.kits.support import ServerThread, short_dir


class Replicas:
    """Replicas started by one test, stopped (and their directories removed) after it."""

    def __init__(self, cluster: EtcdCluster) -> None:
        self.cluster = cluster
        self.prefix = new_prefix()
        self.shared = short_dir("key")
        self.key_file = write_key_file(self.shared)
        self.started: list[ServerThread] = []
        self.dirs: list[Path] = [self.shared]

    def start(self, key_file: Path | None = None, **more) -> ServerThread:
        data_dir = short_dir("rep")
        self.dirs.append(data_dir)
        key = key_file or self.key_file
        settings = replica_settings(self.cluster, self.prefix, key, readiness_interval=0.2, **more)
        server = ServerThread(data_dir, **settings).start()
        self.started.append(server)
        return server

    def close(self) -> None:
        for server in self.started:
            server.stop()
        for directory in self.dirs:
            shutil.rmtree(directory, ignore_errors=True)


def config(server: ServerThread) -> v2_grpc.ConfigServiceStub:
    return v2_grpc.ConfigServiceStub(server.channel())


def update(stub: v2_grpc.ConfigServiceStub, doc: dict, etag: str = "", timeout: float = 15) -> v2.UpdateSmtpResponse:
    return stub.UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(doc), etag=etag), timeout=timeout)


def rename(stub: v2_grpc.ConfigServiceStub, name: str, timeout: float = 15) -> v2.UpdateSmtpResponse:
    request = v2.UpdateSmtpRequest(profile=v2.SmtpProfile(sender_name=name))
    request.update_mask.paths.append("SenderName")
    return stub.UpdateSmtp(request, timeout=timeout)
