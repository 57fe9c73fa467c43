"""`smtpconfig store copy`: a single server's SQLite state moved into etcd, then served by a replica
started with the same key; refused into a store that holds data, or with a key that does not fit."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import pytest

from smtpconfig.cli.main import main
from smtpconfig.v2 import config_service_pb2 as v2
from smtpconfig.v2 import config_service_pb2_grpc as v2_grpc
from tests.kits.etcd import EtcdCluster, new_prefix, replica_settings
from tests.kits.profiles import BASIC_V2, v2_profile
from tests.kits.support import ServerThread, short_dir


def test_sqlite_state_copied_to_etcd_is_served_by_a_replica(
    etcd_cluster: EtcdCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir, replica_dir = short_dir("single"), short_dir("rep")
    prefix = new_prefix()
    monkeypatch.setenv("SMTPCONFIG_ETCD_PREFIX", prefix)
    try:
        single = ServerThread(data_dir).start()
        try:
            v2_grpc.ConfigServiceStub(single.channel()).UpdateSmtp(
                v2.UpdateSmtpRequest(profile=v2_profile(BASIC_V2)), timeout=10
            )
            copy = ["store", "copy", "--data-dir", str(data_dir), "--etcd-endpoints", etcd_cluster.endpoints]
            assert main(copy) != 0  # the server still holds its store
            assert "in use by another smtpconfig server" in capsys.readouterr().err
        finally:
            single.stop()
        assert main(copy) == 0
        assert "copied 1 keys and 1 change records from sqlite to etcd" in capsys.readouterr().out
        assert main(copy) != 0
        assert "already holds data" in capsys.readouterr().err
        replica = ServerThread(replica_dir, **replica_settings(etcd_cluster, prefix, data_dir / "secret.key")).start()
        try:
            stub = v2_grpc.ConfigServiceStub(replica.channel())
            resolved = stub.ResolveSmtp(v2.ResolveSmtpRequest(), timeout=10)
            assert resolved.credentials.password == "relay-password"
            assert resolved.profile.host == BASIC_V2["Host"]
        finally:
            replica.stop()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
        shutil.rmtree(replica_dir, ignore_errors=True)


def test_a_key_that_does_not_fit_the_source_is_refused_before_anything_is_written(
    etcd_cluster: EtcdCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data_dir = short_dir("single")
    prefix = new_prefix()
    monkeypatch.setenv("SMTPCONFIG_ETCD_PREFIX", prefix)
    try:
        single = ServerThread(data_dir).start()
        single.stop()
        monkeypatch.setenv("SMTPCONFIG_KEY", base64.urlsafe_b64encode(b"k" * 32).decode())
        assert main(["store", "copy", "--data-dir", str(data_dir), "--etcd-endpoints", etcd_cluster.endpoints]) != 0
        assert "was encrypted with key" in capsys.readouterr().err
        assert etcd_cluster.etcdctl("get", prefix, "--prefix", "--keys-only").strip() == ""
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
