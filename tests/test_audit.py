"""The audit trail over a real channel: every change, test and resolution leaves one record naming
who called, which method, the caller's request id, the outcome and which fields or provider, never
a value; reads leave none. Records are read back through AuditService, `smtpconfig audit` and the
SQLite file itself, and survive kill -9 together with the change they describe.

Callers are three bearer-token identities besides the admin (tests/kits/calls.py): alice and bob
hold every permission, carol only `smtp:read`. Secret values come from a real `exec` provider (a
shell script) and the SMTP tests go to a real aiosmtpd server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2

from smtpconfig.api.calls import ANONYMOUS_RECORDS_BURST, ANONYMOUS_RECORDS_PER_SECOND
from smtpconfig.cli import main as cli
from smtpconfig.domain.crypto import load_key
from smtpconfig.ops.audit import AuditLog, AuditRecord
from smtpconfig.ops.audit_file import AuditFile
from smtpconfig.settings import KEY_NAME
from smtpconfig.store.sqlite import SqliteStore
from smtpconfig.v1 import config_service_pb2 as v1
from smtpconfig.v1 import config_service_pb2_grpc as v1_grpc
from smtpconfig.v2 import audit_service_pb2 as audit_pb
from smtpconfig.v2 import audit_service_pb2_grpc as audit_grpc
from smtpconfig.v2 import config_service_pb2 as v2
from smtpconfig.v2 import config_service_pb2_grpc as v2_grpc
from smtpconfig.v2 import secret_pb2
from smtpconfig.v2 import secret_provider_service_pb2 as pb
from smtpconfig.v2 import secret_provider_service_pb2_grpc as pb_grpc
from tests.kits.calls import ALICE_TOKEN, BOB_TOKEN, CALLERS, CAROL_TOKEN, OK, invoke, list_records, rid
from tests.kits.metrics import moved, scrape
from tests.kits.profiles import BASIC_V2, anonymous, edit, v1_profile, v2_profile
from tests.kits.smtpkit import SmtpServer, refusing_port
from tests.kits.support import ServerProcess, ServerThread, short_dir, violations

BOGUS_TOKEN = "PLANTED-bogus-bearer-0f4c6b"
INLINE_PASSWORD = "PLANTED-inline-relay-pw-3c1d"
PROVIDER_TOKEN = "PLANTED-provider-init-token-a8e2"
PROVIDER_TOKEN_2 = "PLANTED-provider-init-token-2-61f9"
RESOLVED_PASSWORD = "PLANTED-resolved-password-77b0"
CHECKED_VALUE = "PLANTED-checked-inline-5d9e"
PLANTED = (
    ALICE_TOKEN, BOB_TOKEN, CAROL_TOKEN, BOGUS_TOKEN, INLINE_PASSWORD, PROVIDER_TOKEN, PROVIDER_TOKEN_2,
    RESOLVED_PASSWORD, CHECKED_VALUE,
)

# Prints a planted value for `smtp-password` and `relay-user`, nothing (not found) for the rest.
VENDOR = f"""#!/bin/sh
case "$SMTPCONFIG_SECRET_NAME" in
  smtp-password) printf '%s' '{RESOLVED_PASSWORD}' ;;
  relay-user) printf 'relay-user' ;;
esac
"""


@dataclass
class Env:
    server: ServerThread
    channel: grpc.Channel
    smtp: SmtpServer
    vendor: str
    v1: v1_grpc.ConfigServiceStub
    v2: v2_grpc.ConfigServiceStub
    providers: pb_grpc.SecretProviderServiceStub

    def records(self) -> list[audit_pb.AuditRecord]:
        return list_records(self.channel, self.server.token)

    def record(self, request_id: str) -> audit_pb.AuditRecord:
        found = [r for r in self.records() if r.request_id == request_id]
        assert len(found) == 1, f"{len(found)} records for request {request_id}"
        return found[0]

    def create_exec(self, name: str, request_id: str = "") -> pb.ProviderInstance:
        """An `exec` instance running VENDOR, with PROVIDER_TOKEN as its secret Token, made by alice."""
        instance = pb.ProviderInstance(name=name, provider_type="exec")
        instance.initialization["Command"].value = json.dumps([self.vendor])
        instance.initialization["Token"].value = PROVIDER_TOKEN
        request = pb.CreateProviderRequest(provider=instance)
        return invoke(self.providers.CreateProvider, request, ALICE_TOKEN, request_id or rid("create")).provider


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[Env]:
    scripts = tmp_path_factory.mktemp("vendor")
    vendor = scripts / "vendor-cli"
    vendor.write_text(VENDOR)
    vendor.chmod(0o755)
    data_dir = short_dir("au")
    server = ServerThread(data_dir, smtp_timeout=5.0, provider_timeout=5.0, exec_commands=((str(vendor),),),
                          **CALLERS).start()
    smtp = SmtpServer("plain").start()
    channel = grpc.insecure_channel(server.target)
    try:
        yield Env(server, channel, smtp, str(vendor), v1_grpc.ConfigServiceStub(channel),
                  v2_grpc.ConfigServiceStub(channel), pb_grpc.SecretProviderServiceStub(channel))
    finally:
        channel.close()
        smtp.stop()
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


# --- what is recorded -----------------------------------------------------------------------------


def test_profile_updates_record_caller_method_request_id_outcome_and_changed_fields(env: Env) -> None:
    basic = edit(BASIC_V2, RelayPassword={"SecretValue": INLINE_PASSWORD})
    full = rid("v2-full")
    stored = invoke(env.v2.UpdateSmtp, v2.UpdateSmtpRequest(profile=v2_profile(basic)), ALICE_TOKEN, full)
    record = env.record(full)
    assert (record.identity, record.method, record.outcome) == ("alice", "v2.ConfigService/UpdateSmtp", "OK")
    assert {"Host", "Port", "RelayPassword", "SenderAccount"} <= set(record.fields)
    assert record.provider == 0 and record.time.seconds > 0

    masked = rid("v2-port")
    request = v2.UpdateSmtpRequest(profile=v2_profile(edit(basic, Port=2525)), etag=stored.etag,
                                   update_mask=field_mask_pb2.FieldMask(paths=["Port"]))
    invoke(env.v2.UpdateSmtp, request, BOB_TOKEN, masked)
    record = env.record(masked)
    assert (record.identity, record.method, record.outcome, list(record.fields)) == (
        "bob", "v2.ConfigService/UpdateSmtp", "OK", ["Port"])
    assert record.sequence > env.record(full).sequence

    v1_update = rid("v1-full")
    doc = {"Id": 1, "Host": "smtp.example.org", "Port": 2525, "RelayAuthenticationType": 2,
           "RelayUsername": "relay-user", "RelayPassword": INLINE_PASSWORD,
           "SenderAccount": "relay@example.com", "SenderName": "Example Relay", "UseSSL": True}
    invoke(env.v1.UpdateSmtp, v1.UpdateSmtpRequest(profile=v1_profile(doc)), BOB_TOKEN, v1_update)
    record = env.record(v1_update)
    assert (record.identity, record.method, record.outcome) == ("bob", "v1.ConfigService/UpdateSmtp", "OK")
    assert "Host" in record.fields and "Port" not in record.fields  # only what changed

    before = env.v2.GetSmtp(v2.GetSmtpRequest(), metadata=[("authorization", f"Bearer {ALICE_TOKEN}")])
    # Refusals of audited methods are recorded too, with who (when known) and why.
    bad = rid("v2-bad")
    invoke(env.v2.UpdateSmtp, v2.UpdateSmtpRequest(profile=v2_profile(edit(basic, Host="bad host"))),
           ALICE_TOKEN, bad, grpc.StatusCode.INVALID_ARGUMENT)
    denied = rid("v2-denied")
    invoke(env.v2.UpdateSmtp, v2.UpdateSmtpRequest(profile=v2_profile(basic)), CAROL_TOKEN, denied,
           grpc.StatusCode.PERMISSION_DENIED)
    stranger = rid("v2-stranger")
    invoke(env.v2.UpdateSmtp, v2.UpdateSmtpRequest(profile=v2_profile(basic)), BOGUS_TOKEN, stranger,
           grpc.StatusCode.UNAUTHENTICATED)
    nobody = rid("v1-nobody")
    invoke(env.v1.UpdateSmtp, v1.UpdateSmtpRequest(profile=v1_profile(doc)), None, nobody,
           grpc.StatusCode.UNAUTHENTICATED)
    expected = {
        bad: ("alice", "v2.ConfigService/UpdateSmtp", "INVALID_ARGUMENT"),
        denied: ("carol", "v2.ConfigService/UpdateSmtp", "PERMISSION_DENIED"),
        stranger: ("", "v2.ConfigService/UpdateSmtp", "UNAUTHENTICATED"),
        nobody: ("", "v1.ConfigService/UpdateSmtp", "UNAUTHENTICATED"),
    }
    for request_id, (identity, method, outcome) in expected.items():
        record = env.record(request_id)
        assert (record.identity, record.method, record.outcome) == (identity, method, outcome), request_id
        assert record.message, f"a refusal says why ({request_id})"
    assert "smtp:modify" in env.record(denied).message
    after = env.v2.GetSmtp(v2.GetSmtpRequest(), metadata=[("authorization", f"Bearer {ALICE_TOKEN}")])
    assert after.etag == before.etag  # nothing refused was stored


def test_smtp_tests_are_recorded_for_both_versions(env: Env) -> None:
    doc = anonymous(env.smtp.host, env.smtp.port)
    sent = len(env.smtp.messages)
    good = rid("v2-test")
    reply = invoke(env.v2.TestSmtp, v2.TestSmtpRequest(profile=v2_profile(doc), test_recipient="ops@example.com"),
                   ALICE_TOKEN, good)
    assert reply.success
    env.smtp.wait_for_message(count=sent + 1)
    record = env.record(good)
    assert (record.identity, record.method, record.outcome) == ("alice", "v2.ConfigService/TestSmtp", "OK")
    assert "ops@example.com" in record.message and "sent" in record.message

    v1_good = rid("v1-test")
    v1_doc = dict(doc)
    invoke(env.v1.TestSmtp, v1.TestSmtpRequest(profile=v1_profile(v1_doc), test_recipient="ops@example.com"),
           BOB_TOKEN, v1_good)
    env.smtp.wait_for_message(count=sent + 2)
    record = env.record(v1_good)
    assert (record.identity, record.method, record.outcome) == ("bob", "v1.ConfigService/TestSmtp", "OK")

    # v1 reports a failed test as an error status: the record has that status as its outcome.
    with refusing_port() as port:
        v1_down = rid("v1-test-down")
        invoke(env.v1.TestSmtp, v1.TestSmtpRequest(profile=v1_profile(edit(v1_doc, Port=port)),
                                                   test_recipient="ops@example.com"),
               BOB_TOKEN, v1_down, grpc.StatusCode.UNAVAILABLE)
    record = env.record(v1_down)
    assert (record.identity, record.method, record.outcome) == ("bob", "v1.ConfigService/TestSmtp", "UNAVAILABLE")
    assert "connect" in record.message
    assert len(env.smtp.messages) == sent + 2

    denied = rid("v2-test-denied")
    invoke(env.v2.TestSmtp, v2.TestSmtpRequest(profile=v2_profile(doc), test_recipient="ops@example.com"),
           CAROL_TOKEN, denied, grpc.StatusCode.PERMISSION_DENIED)
    assert env.record(denied).outcome == "PERMISSION_DENIED"
    assert len(env.smtp.messages) == sent + 2


def test_resolutions_record_which_credentials_were_revealed(env: Env) -> None:
    vendor = env.create_exec(rid("resolve-vendor"))
    doc = edit(BASIC_V2, RelayPassword={"Provider": vendor.id, "Parameters": {"Name": "smtp-password"}})
    invoke(env.v2.UpdateSmtp, v2.UpdateSmtpRequest(profile=v2_profile(doc)), ALICE_TOKEN, rid("update"))
    resolved = rid("resolve")
    reply = invoke(env.v2.ResolveSmtp, v2.ResolveSmtpRequest(), BOB_TOKEN, resolved)
    assert reply.credentials.password == RESOLVED_PASSWORD  # the value really went out
    record = env.record(resolved)
    assert (record.identity, record.method, record.outcome) == ("bob", "v2.ConfigService/ResolveSmtp", "OK")
    assert list(record.fields) == ["RelayUsername", "RelayPassword"]
    assert reply.etag in record.message

    denied = rid("resolve-denied")
    invoke(env.v2.ResolveSmtp, v2.ResolveSmtpRequest(), CAROL_TOKEN, denied, grpc.StatusCode.PERMISSION_DENIED)
    record = env.record(denied)
    assert (record.identity, record.outcome, list(record.fields)) == ("carol", "PERMISSION_DENIED", [])


def test_provider_changes_record_the_provider_and_its_changed_names(env: Env) -> None:
    instance = pb.ProviderInstance(name=rid("vendor"), provider_type="exec")
    instance.initialization["Command"].value = json.dumps([env.vendor])
    instance.initialization["Token"].value = PROVIDER_TOKEN
    created_id = rid("create")
    created = invoke(env.providers.CreateProvider, pb.CreateProviderRequest(provider=instance), ALICE_TOKEN,
                     created_id).provider
    record = env.record(created_id)
    assert (record.identity, record.method, record.outcome, record.provider) == (
        "alice", "v2.SecretProviderService/CreateProvider", "OK", created.id)
    assert list(record.fields) == ["Name", "ProviderType", "Initialization.Command", "Initialization.Token"]

    renamed_id = rid("rename")
    request = pb.UpdateProviderRequest(provider=pb.ProviderInstance(id=created.id, name=rid("renamed")),
                                       update_mask=field_mask_pb2.FieldMask(paths=["Name"]))
    renamed = invoke(env.providers.UpdateProvider, request, BOB_TOKEN, renamed_id).provider
    record = env.record(renamed_id)
    assert (record.identity, record.method, record.provider, list(record.fields)) == (
        "bob", "v2.SecretProviderService/UpdateProvider", created.id, ["Name"])

    rotated_id = rid("rotate")
    rotated = pb.ProviderInstance(id=created.id)
    rotated.initialization["Token"].value = PROVIDER_TOKEN_2
    request = pb.UpdateProviderRequest(provider=rotated, update_mask=field_mask_pb2.FieldMask(paths=["Initialization"]))
    rotated = invoke(env.providers.UpdateProvider, request, ALICE_TOKEN, rotated_id).provider
    assert list(env.record(rotated_id).fields) == ["Initialization.Token"]

    stale_id = rid("delete-stale")
    invoke(env.providers.DeleteProvider, pb.DeleteProviderRequest(id=created.id, etag=renamed.etag), ALICE_TOKEN,
           stale_id, grpc.StatusCode.ABORTED)
    record = env.record(stale_id)
    assert (record.outcome, record.provider) == ("ABORTED", created.id)

    deleted_id = rid("delete")
    invoke(env.providers.DeleteProvider, pb.DeleteProviderRequest(id=created.id, etag=rotated.etag), BOB_TOKEN, deleted_id)
    record = env.record(deleted_id)
    assert (record.identity, record.method, record.outcome, record.provider, list(record.fields)) == (
        "bob", "v2.SecretProviderService/DeleteProvider", "OK", created.id, [])

    denied = rid("create-denied")
    invoke(env.providers.CreateProvider, pb.CreateProviderRequest(provider=instance), CAROL_TOKEN, denied,
           grpc.StatusCode.PERMISSION_DENIED)
    assert (env.record(denied).identity, env.record(denied).outcome) == ("carol", "PERMISSION_DENIED")


def test_check_secret_is_recorded_with_the_provider_or_field(env: Env) -> None:
    inline = rid("check-inline")
    reply = invoke(env.providers.CheckSecret,
                   pb.CheckSecretRequest(secret=secret_pb2.SecretObject(secret_value=CHECKED_VALUE)), ALICE_TOKEN, inline)
    assert reply.success and reply.provider_type == "inline"
    record = env.record(inline)
    assert (record.identity, record.method, record.outcome, record.provider) == (
        "alice", "v2.SecretProviderService/CheckSecret", "OK", 0)

    vendor = env.create_exec(rid("check-vendor"))
    referenced = rid("check-ref")
    reply = invoke(env.providers.CheckSecret, pb.CheckSecretRequest(
        secret=secret_pb2.SecretObject(provider=vendor.id, parameters={"Name": "smtp-password"})), BOB_TOKEN, referenced)
    assert reply.provider == vendor.id and reply.fingerprint
    record = env.record(referenced)
    assert (record.identity, record.outcome, record.provider) == ("bob", "OK", vendor.id)

    missing = rid("check-missing")
    invoke(env.providers.CheckSecret, pb.CheckSecretRequest(
        secret=secret_pb2.SecretObject(provider=vendor.id, parameters={"Name": "no-such-secret"})), BOB_TOKEN, missing,
        grpc.StatusCode.FAILED_PRECONDITION)
    record = env.record(missing)
    assert (record.outcome, record.provider) == ("FAILED_PRECONDITION", vendor.id)

    invoke(env.v2.UpdateSmtp, v2.UpdateSmtpRequest(profile=v2_profile(
        edit(BASIC_V2, RelayPassword={"SecretValue": INLINE_PASSWORD})), ), ALICE_TOKEN, rid("update"))
    field = rid("check-field")
    invoke(env.providers.CheckSecret, pb.CheckSecretRequest(profile_field="RelayPassword"), ALICE_TOKEN, field)
    assert list(env.record(field).fields) == ["RelayPassword"]


def test_reads_are_not_audited(env: Env) -> None:
    invoke(env.v2.UpdateSmtp, v2.UpdateSmtpRequest(profile=v2_profile(BASIC_V2)), ALICE_TOKEN, rid("update"))
    vendor = env.create_exec(rid("read-vendor"))
    before = env.records()
    reads = [
        (env.v2.GetSmtp, v2.GetSmtpRequest()),
        (env.v1.GetSmtp, v1.GetSmtpRequest()),
        (env.providers.ListProviders, pb.ListProvidersRequest()),
        (env.providers.GetProvider, pb.GetProviderRequest(id=vendor.id)),
        (env.providers.ListProviderTypes, pb.ListProviderTypesRequest()),
    ]
    read_ids = []
    for method, request in reads:
        read_ids.append(rid("read"))
        invoke(method, request, ALICE_TOKEN, read_ids[-1])
    # A read refused is not recorded either: only audited methods record refusals.
    read_ids.append(rid("read-denied"))
    invoke(env.providers.ListProviders, pb.ListProvidersRequest(), CAROL_TOKEN, read_ids[-1],
           grpc.StatusCode.PERMISSION_DENIED)
    audited = rid("audited")
    invoke(env.v2.ResolveSmtp, v2.ResolveSmtpRequest(), ALICE_TOKEN, audited)
    after = env.records()
    assert [r.request_id for r in after[len(before):]] == [audited]
    assert not {r.request_id for r in after} & set(read_ids)


# --- never a value --------------------------------------------------------------------------------


def _assert_clean(where: str, data: bytes | str) -> None:
    blob = data.encode("utf-8", "replace") if isinstance(data, str) else data
    for secret in PLANTED:
        for form in (secret.encode("utf-8"), secret.encode("utf-16-le")):
            assert form not in blob, f"planted secret {secret[:14]}... found in {where}"


def test_no_secret_value_reaches_any_audit_record(env: Env, capsys) -> None:
    ids = []

    def call(method, request, token, code=OK):
        ids.append(rid("leak"))
        return invoke(method, request, token, ids[-1], code)

    ids.append(rid("leak"))
    vendor = env.create_exec(rid("leak-vendor"), ids[-1])
    call(env.v2.UpdateSmtp, v2.UpdateSmtpRequest(profile=v2_profile(edit(
        BASIC_V2, RelayPassword={"SecretValue": INLINE_PASSWORD}))), ALICE_TOKEN)
    # Rejected requests carrying values: their records must not quote them either.
    call(env.v2.UpdateSmtp, v2.UpdateSmtpRequest(profile=v2_profile(edit(
        BASIC_V2, RelayPassword={"SecretValue": INLINE_PASSWORD, "Provider": vendor.id}))), BOB_TOKEN,
        grpc.StatusCode.INVALID_ARGUMENT)
    call(env.v2.UpdateSmtp, v2.UpdateSmtpRequest(profile=v2_profile(edit(
        BASIC_V2, Host="bad host", RelayPassword={"SecretValue": INLINE_PASSWORD}))), BOB_TOKEN,
        grpc.StatusCode.INVALID_ARGUMENT)
    call(env.v2.UpdateSmtp, v2.UpdateSmtpRequest(profile=v2_profile(edit(
        BASIC_V2, RelayPassword={"Provider": vendor.id, "Parameters": {"Name": "smtp-password"}}))), ALICE_TOKEN)
    assert call(env.v2.ResolveSmtp, v2.ResolveSmtpRequest(), BOB_TOKEN).credentials.password == RESOLVED_PASSWORD
    call(env.providers.CheckSecret, pb.CheckSecretRequest(secret=secret_pb2.SecretObject(secret_value=CHECKED_VALUE)),
         ALICE_TOKEN)
    call(env.providers.CheckSecret, pb.CheckSecretRequest(profile_field="RelayPassword"), ALICE_TOKEN)
    call(env.providers.CheckSecret, pb.CheckSecretRequest(secret=secret_pb2.SecretObject(
        provider=vendor.id, parameters={"Name": "no-such-secret"})), ALICE_TOKEN, grpc.StatusCode.FAILED_PRECONDITION)
    rotated = pb.ProviderInstance(id=vendor.id)
    rotated.initialization["Token"].value = PROVIDER_TOKEN_2
    call(env.providers.UpdateProvider, pb.UpdateProviderRequest(
        provider=rotated, update_mask=field_mask_pb2.FieldMask(paths=["Initialization"])), BOB_TOKEN)
    call(env.v2.UpdateSmtp, v2.UpdateSmtpRequest(profile=v2_profile(BASIC_V2)), BOGUS_TOKEN,
         grpc.StatusCode.UNAUTHENTICATED)
    call(env.v2.ResolveSmtp, v2.ResolveSmtpRequest(), CAROL_TOKEN, grpc.StatusCode.PERMISSION_DENIED)

    records = env.records()
    by_id = {r.request_id: r for r in records}
    assert set(ids) <= by_id.keys(), "every call above is audited"
    _assert_clean("ListAuditRecords", b"".join(r.SerializeToString() for r in records))

    assert cli.main(["audit", "--json", *env.server.cli_args]) == 0
    shown = capsys.readouterr().out
    assert all(i in shown for i in ids)
    _assert_clean("smtpconfig audit --json", shown)
    assert cli.main(["audit", *env.server.cli_args]) == 0
    shown = capsys.readouterr().out
    assert all(i in shown for i in ids)
    _assert_clean("smtpconfig audit", shown)

    database = env.server.data_dir / "smtpconfig.db"
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        rows = [bytes(r) for (r,) in db.execute("SELECT record FROM audit")]
    # Change records in the store, the rest in the replica's own log: together, every record listed.
    lines = [line for path in sorted((env.server.data_dir / "audit").glob("*.jsonl"))
             for line in path.read_bytes().splitlines()]
    assert len(rows) == len([r for r in records if r.change])
    assert len(rows) + len(lines) == len(records)
    assert all(i.encode() in b"".join(rows + lines) for i in ids)
    for row in rows:
        _assert_clean("the audit table", row)
    for line in lines:
        _assert_clean("the audit log", line)
    for path in [*env.server.data_dir.iterdir(), *(env.server.data_dir / "audit").iterdir()]:
        if path.is_file() and (path.name.startswith("smtpconfig.db") or path.suffix == ".jsonl"):
            _assert_clean(f"file {path.name}", path.read_bytes())


# --- reading the trail ----------------------------------------------------------------------------


def test_smtpconfig_audit_prints_lines_json_and_filters_by_time(env: Env, capsys) -> None:
    update, test = rid("cli-update"), rid("cli-test")
    invoke(env.v2.UpdateSmtp, v2.UpdateSmtpRequest(profile=v2_profile(edit(BASIC_V2, Port=2600)),
                                                   update_mask=field_mask_pb2.FieldMask(paths=["Port"])),
           BOB_TOKEN, update)
    invoke(env.v2.TestSmtp, v2.TestSmtpRequest(profile=v2_profile(anonymous(env.smtp.host, env.smtp.port)),
                                               test_recipient="ops@example.com"), ALICE_TOKEN, test)
    total = len(env.records())

    assert cli.main(["audit", *env.server.cli_args]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == total
    line = next(x for x in lines if update in x)
    assert "bob" in line and "v2.ConfigService/UpdateSmtp" in line and "OK" in line and "Port" in line
    assert line.endswith(f"[{update}]")
    assert [x for x in lines if test in x][0].split("  ")[1:4] == ["alice", "v2.ConfigService/TestSmtp", "OK"]

    assert cli.main(["audit", "--json", *env.server.cli_args]) == 0
    docs = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(docs) == total
    doc = next(d for d in docs if d["RequestId"] == update)
    assert (doc["Identity"], doc["Method"], doc["Outcome"], doc["Fields"]) == (
        "bob", "v2.ConfigService/UpdateSmtp", "OK", ["Port"])
    sequences = [d["Sequence"] for d in docs]
    assert all(isinstance(s, int) for s in sequences), "int64 as JSON numbers, as every --json prints them"
    # Change records (the store's) and call records (the replica's log) each keep their own
    # sequence, increasing; the listing interleaves them by time.
    assert doc["Change"] is True and doc["Replica"] == env.server.app.settings.replica
    assert next(d for d in docs if d["RequestId"] == test).get("Change", False) is False
    for change in (True, False):
        kind = [d["Sequence"] for d in docs if d.get("Change", False) is change]
        assert kind and kind == sorted(kind) and len(set(kind)) == len(kind)

    assert cli.main(["audit", "--since", "1h", "--json", *env.server.cli_args]) == 0
    recent = [json.loads(x)["RequestId"] for x in capsys.readouterr().out.splitlines()]
    assert update in recent and test in recent
    assert cli.main(["audit", "--since", "2999-01-01T00:00:00Z", *env.server.cli_args]) == 0
    assert capsys.readouterr().out == "no audit records since 2999-01-01T00:00:00Z\n"
    assert cli.main(["audit", "--since", "2999-01-01T00:00:00Z", "--json", *env.server.cli_args]) == 0
    assert capsys.readouterr().out == ""  # JSON lines: no record, no line

    assert cli.main(["audit", "--since", "yesterday", *env.server.cli_args]) == 2
    err = capsys.readouterr().err
    assert "--since" in err and "yesterday" in err

    # Ages reaching back before the year 1 (or past what a timedelta holds) are bad input too.
    for age in ("1000000d", "99999999999999h", "999999999999999999999m"):
        assert cli.main(["audit", "--since", age, *env.server.cli_args]) == 2, age
        out = capsys.readouterr()
        assert out.out == ""
        assert out.err.startswith("smtpconfig: ") and f"--since '{age}'" in out.err, out.err
        assert "Traceback" not in out.err and "OverflowError" not in out.err


def test_pages_come_back_complete_and_in_order() -> None:
    """Change records (in the store) and call records (in the replica's log) interleaved: the page
    token is a cursor into both, so pages put together are the whole trail once, in call order."""
    data_dir = short_dir("ap")
    server = ServerThread(data_dir, **CALLERS).start()
    try:
        with grpc.insecure_channel(server.target) as channel:
            providers = pb_grpc.SecretProviderServiceStub(channel)
            config = v2_grpc.ConfigServiceStub(channel)
            made = []
            for n in range(23):
                made.append(rid(f"page{n}"))
                if n % 3 == 1:
                    invoke(config.UpdateSmtp, v2.UpdateSmtpRequest(profile=v2_profile(edit(BASIC_V2, Port=3000 + n))),
                           ALICE_TOKEN, made[-1])
                else:
                    invoke(providers.CheckSecret, pb.CheckSecretRequest(
                        secret=secret_pb2.SecretObject(secret_value=f"v{n}")), ALICE_TOKEN, made[-1])
            stub = audit_grpc.AuditServiceStub(channel)
            admin = [("authorization", f"Bearer {server.token}")]
            pages, token = [], ""
            while True:
                page = stub.ListAuditRecords(audit_pb.ListAuditRecordsRequest(page_size=5, page_token=token),
                                             metadata=admin, timeout=10)
                pages.append(page.records)
                assert len(page.records) <= 5
                if not page.next_page_token:
                    break
                token = page.next_page_token
            assert len(pages) >= 5
            paged = [r for p in pages for r in p]
            assert [r.request_id for r in paged] == made  # complete, once each, in call order
            assert [r.change for r in paged] == [n % 3 == 1 for n in range(23)]
            for change in (True, False):
                sequences = [r.sequence for r in paged if r.change is change]
                assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)
            assert paged == list_records(channel, server.token)  # the same as one big page

            # Resuming from the middle gives exactly the rest.
            first = stub.ListAuditRecords(audit_pb.ListAuditRecordsRequest(page_size=10), metadata=admin)
            middle = stub.ListAuditRecords(audit_pb.ListAuditRecordsRequest(
                page_size=1000, page_token=first.next_page_token), metadata=admin)
            assert [r.request_id for r in middle.records] == made[10:] and not middle.next_page_token

            # "²" is a digit to str.isdigit() but not to int(); 19 nines pass for a number but
            # not for a SQLite integer: both once ended INTERNAL. A bare number was the token of
            # a trail with one kind of record: it is not a cursor into both.
            for bad in ("abc", "-5", "1" * 25, "12x", "\u00b2", "9999999999999999999", " 5", "5\n",
                        "5", "1.2.3", "1.", ".1", "1." + "9" * 19, "1.\u00b2", "1.5\n"):
                with pytest.raises(grpc.RpcError) as failure:
                    stub.ListAuditRecords(audit_pb.ListAuditRecordsRequest(page_token=bad), metadata=admin)
                assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT, repr(bad)
                assert [f for f, _ in violations(failure.value)] == ["page_token"], repr(bad)
            # The largest token accepted is past every record: an empty last page, not an error.
            beyond = stub.ListAuditRecords(audit_pb.ListAuditRecordsRequest(page_token="9" * 18 + "." + "9" * 18),
                                           metadata=admin)
            assert not beyond.records and not beyond.next_page_token
            with pytest.raises(grpc.RpcError) as failure:
                stub.ListAuditRecords(audit_pb.ListAuditRecordsRequest(page_size=-1), metadata=admin)
            assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert [f for f, _ in violations(failure.value)] == ["page_size"]
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def test_reading_the_trail_needs_audit_read(env: Env, tmp_path: Path, capsys) -> None:
    stub = audit_grpc.AuditServiceStub(env.channel)
    with pytest.raises(grpc.RpcError) as failure:
        stub.ListAuditRecords(audit_pb.ListAuditRecordsRequest(), metadata=[("authorization", f"Bearer {CAROL_TOKEN}")])
    assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "audit:read" in failure.value.details()
    with pytest.raises(grpc.RpcError) as failure:
        stub.ListAuditRecords(audit_pb.ListAuditRecordsRequest())
    assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # A caller with every permission reads it.
    assert list_records(env.channel, ALICE_TOKEN)

    carol = tmp_path / "carol.token"
    carol.write_text(CAROL_TOKEN)
    assert cli.main(["audit", "--target", env.server.target, "--token-file", str(carol)]) != 0
    out = capsys.readouterr()
    assert out.out == "" and "audit:read" in out.err


# --- what the trail is spared ----------------------------------------------------------------------


def test_refusals_of_callers_without_any_identity_are_recorded_only_up_to_a_rate() -> None:
    flood = 300
    data_dir = short_dir("af")
    server = ServerThread(data_dir, metrics_listen="127.0.0.1:0", **CALLERS).start()
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = v2_grpc.ConfigServiceStub(channel)
            _, before = scrape(server.app.metrics_port)
            ids = [rid("flood") for _ in range(flood)]
            started = time.monotonic()
            with ThreadPoolExecutor(max_workers=16) as pool:
                list(pool.map(lambda request_id: invoke(
                    stub.ResolveSmtp, v2.ResolveSmtpRequest(), None, request_id, grpc.StatusCode.UNAUTHENTICATED), ids))
            elapsed = time.monotonic() - started
            _, after = scrape(server.app.metrics_port)
            # Anything slower and the cap would allow all of them: the test could not fail.
            assert elapsed < 10, f"the flood took {elapsed:.1f}s"

            # A known caller's refusal right after is still recorded, however spent the cap is.
            denied = rid("after-flood")
            invoke(stub.ResolveSmtp, v2.ResolveSmtpRequest(), CAROL_TOKEN, denied, grpc.StatusCode.PERMISSION_DENIED)
            records = list_records(channel, server.token)
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)

    resolve = "v2.ConfigService/ResolveSmtp"
    assert moved(before, after, "smtpconfig_rpc_requests_total", method=resolve, code="UNAUTHENTICATED") == flood
    recorded = [r for r in records if r.request_id in set(ids)]
    assert {(r.identity, r.method, r.outcome) for r in recorded} == {("", resolve, "UNAUTHENTICATED")}
    cap = ANONYMOUS_RECORDS_BURST + ANONYMOUS_RECORDS_PER_SECOND * elapsed
    assert ANONYMOUS_RECORDS_BURST <= len(recorded) <= cap + 1, (len(recorded), elapsed)
    # Every refusal is accounted for: on the trail, or counted as not recorded.
    assert moved(before, after, "smtpconfig_audit_records_total", outcome="UNAUTHENTICATED") == len(recorded)
    assert moved(before, after, "smtpconfig_audit_records_total",
                 outcome="UNAUTHENTICATED_NOT_RECORDED") == flood - len(recorded)
    assert [(r.identity, r.method, r.outcome) for r in records if r.request_id == denied] == [
        ("carol", resolve, "PERMISSION_DENIED")]


# Just under the 1 MiB message limit, with a forged line of the trail near its start.
FORGED = "\n2026-01-01 00:00:00  admin  v2.ConfigService/UpdateSmtp  OK  Port  [forged]\n"
BIG = ("x" * 40 + FORGED).ljust(1_000_000, "x")


def _database_bytes(data_dir: Path) -> int:
    """The database and its WAL, and the replica's audit log: where records of refusals go."""
    return sum(p.stat().st_size for p in data_dir.iterdir() if p.name.startswith("smtpconfig.db")) + _log_bytes(data_dir)


def _log_bytes(data_dir: Path) -> int:
    return sum(p.stat().st_size for p in (data_dir / "audit").glob("*.jsonl"))


def _megabyte_refusals(channel: grpc.Channel) -> list[tuple[str, Any, Any]]:
    """Refused calls whose requests each carry BIG: (what the record may quote, method, request).
    Its mask path, ProfileField, provider name and test recipient."""
    stub, providers = v2_grpc.ConfigServiceStub(channel), pb_grpc.SecretProviderServiceStub(channel)
    masked = v2.UpdateSmtpRequest(profile=v2_profile(BASIC_V2), update_mask=field_mask_pb2.FieldMask(paths=[BIG]))
    named = pb.ProviderInstance(name=BIG, provider_type="exec")
    named.initialization["Command"].value = '["/bin/true"]'
    return [
        ("update_mask", stub.UpdateSmtp, masked),
        ("ProfileField", providers.CheckSecret, pb.CheckSecretRequest(profile_field=BIG)),
        ("Name", providers.CreateProvider, pb.CreateProviderRequest(provider=named)),
        ("TestRecipient", stub.TestSmtp, v2.TestSmtpRequest(test_recipient=BIG)),
    ]


def test_refusals_quoting_a_megabyte_field_keep_a_few_hundred_characters_of_it_on_one_line(capsys) -> None:
    """30 such calls once grew the database by 28 MB."""
    data_dir = short_dir("ab")
    try:
        server = ServerThread(data_dir, **CALLERS).start()
        try:
            with server.channel() as channel:
                v2_grpc.ConfigServiceStub(channel).UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(BASIC_V2)))
        finally:
            server.stop()
        before = _database_bytes(data_dir)  # a clean stop leaves no WAL: the database as it stands
        server = ServerThread(data_dir, **CALLERS).start()
        try:
            with grpc.insecure_channel(server.target) as channel:
                kinds = _megabyte_refusals(channel)
                sent = {rid("big"): kinds[n % len(kinds)][0] for n in range(30)}
                for n, request_id in enumerate(sent):
                    _, method, request = kinds[n % len(kinds)]
                    error = invoke(method, request, ALICE_TOKEN, request_id, grpc.StatusCode.INVALID_ARGUMENT)
                    assert len(error.details()) < 1024 and violations(error)
                # With the WAL, where each commit adds a few 4 KiB pages whatever its size.
                live = _database_bytes(data_dir) - before
                assert live < 600_000, f"the database and its WAL grew by {live} bytes"
                every = list_records(channel, server.token)
            assert cli.main(["audit", *server.cli_args]) == 0
            lines = capsys.readouterr().out.splitlines()
        finally:
            server.stop()
        grown = _database_bytes(data_dir) - before
        with sqlite3.connect(f"file:{data_dir / 'smtpconfig.db'}?mode=ro", uri=True) as db:
            (stored,) = db.execute("SELECT sum(length(record)) FROM audit").fetchone()
        stored += _log_bytes(data_dir)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)

    records = {r.request_id: r for r in every if r.request_id in sent}
    assert records.keys() == sent.keys()  # each refusal is on record
    for request_id, field in sent.items():
        record = records[request_id]
        texts = [record.identity, record.message, *record.fields]
        assert len(record.message) <= 512 + 40 and all(len(text) <= 256 + 40 for text in texts), record
        assert not any(c in text for text in texts for c in "\r\n"), record
        if field in ("update_mask", "ProfileField"):  # these records quote BIG: in part, saying so
            assert "…[cut, " in " ".join(texts), record
    # A record is a few hundred bytes: all 30 together are far below one BIG.
    assert stored < 30 * 1024, f"the audit records hold {stored} bytes"
    assert grown < 200_000, f"the database grew by {grown} bytes"
    # No record forges a line in `smtpconfig audit`: one line each, ending in its request id.
    assert len(lines) == len(every) and all(line.endswith("]") for line in lines), lines


def test_refusals_of_one_identity_are_recorded_only_up_to_its_rate(caplog) -> None:
    """carol holds only smtp:read; every refusal she can cause is a record somebody has to keep."""
    flood, rate, burst = 10_000, 2.0, 20
    caplog.set_level(logging.WARNING, logger="smtpconfig.api.refusals")
    data_dir = short_dir("ai")
    server = ServerThread(data_dir, metrics_listen="127.0.0.1:0", audit_refusals_rate=rate,
                          audit_refusals_burst=burst, **CALLERS).start()
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = v2_grpc.ConfigServiceStub(channel)
            _, before = scrape(server.app.metrics_port)
            started = time.monotonic()
            ids = asyncio.run(_flood(server.target, flood, CAROL_TOKEN))
            elapsed = time.monotonic() - started
            _, after = scrape(server.app.metrics_port)
            # The cap is carol's own: others' refusals are still recorded, and so is every change,
            # test and resolution of a caller whose refusals are over the cap.
            later = {"bob": rid("bob-denied"), "": rid("nobody"), "alice-ok": rid("alice-ok")}
            invoke(stub.ResolveSmtp, v2.ResolveSmtpRequest(), BOB_TOKEN, later["bob"], grpc.StatusCode.NOT_FOUND)
            invoke(stub.ResolveSmtp, v2.ResolveSmtpRequest(), None, later[""], grpc.StatusCode.UNAUTHENTICATED)
            # Requests that do not decode end before UpdateSmtp starts: capped like refusals.
            alice = [rid("alice-bad") for _ in range(burst + 30)]
            for request_id in alice:
                invoke(_raw(channel, UPDATE_SMTP), UNDECODABLE, ALICE_TOKEN, request_id,
                       grpc.StatusCode.INVALID_ARGUMENT)
            invoke(stub.UpdateSmtp, v2.UpdateSmtpRequest(profile=v2_profile(BASIC_V2)), ALICE_TOKEN, later["alice-ok"])
            resolved = rid("alice-resolve")
            invoke(stub.ResolveSmtp, v2.ResolveSmtpRequest(), ALICE_TOKEN, resolved)
            # A test that failed at the relay did something: not a refusal, so never capped.
            failed_test = rid("alice-test")
            with refusing_port() as port:
                v1_doc = {**anonymous("127.0.0.1", port), "Port": port}
                invoke(v1_grpc.ConfigServiceStub(channel).TestSmtp, v1.TestSmtpRequest(
                    profile=v1_profile(v1_doc), test_recipient="ops@example.com"), ALICE_TOKEN, failed_test,
                    grpc.StatusCode.UNAVAILABLE)
            records = list_records(channel, server.token)
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)

    recorded = [r for r in records if r.request_id in set(ids)]
    assert {(r.identity, r.outcome) for r in recorded} == {("carol", "PERMISSION_DENIED")}
    assert burst <= len(recorded) <= burst + rate * elapsed + 1, (len(recorded), elapsed)
    assert moved(before, after, "smtpconfig_rpc_requests_total", method="v2.ConfigService/ResolveSmtp",
                 code="PERMISSION_DENIED") == flood
    assert moved(before, after, "smtpconfig_audit_records_total", outcome="PERMISSION_DENIED") == len(recorded)
    assert moved(before, after, "smtpconfig_audit_records_total",
                 outcome="PERMISSION_DENIED_NOT_RECORDED") == flood - len(recorded)
    # The log says so, without a line per refusal.
    reports = [r.getMessage() for r in caplog.records if r.name == "smtpconfig.api.refusals"]
    assert len(reports) == 2 and "'carol'" in reports[0] and "'alice'" in reports[1], reports
    found = {r.request_id: (r.identity, r.outcome) for r in records}
    assert found[later["bob"]] == ("bob", "NOT_FOUND")
    assert found[later[""]] == ("", "UNAUTHENTICATED")
    assert found[later["alice-ok"]] == ("alice", "OK") and found[resolved] == ("alice", "OK")
    assert found[failed_test] == ("alice", "UNAVAILABLE")
    assert burst <= len([i for i in alice if i in found]) < len(alice)


UPDATE_SMTP = "/smtpconfig.v2.ConfigService/UpdateSmtp"
CHECK_SECRET = "/smtpconfig.v2.SecretProviderService/CheckSecret"
# A length-delimited field 1 of 5 bytes with 2 of them sent: no request type decodes it.
UNDECODABLE = b"\x0a\x05ab"
# Prints bytes that are not UTF-8 for `binary`, nothing for any other name.
BINARY_VENDOR = """#!/bin/sh
[ "$SMTPCONFIG_SECRET_NAME" = binary ] && printf '\\377\\376'
exit 0
"""


def _raw(channel: grpc.Channel, path: str):
    """`path` called with request bytes as given."""
    return channel.unary_unary(path, request_serializer=None, response_deserializer=None)


def test_outcomes_after_the_method_started_are_recorded_however_spent_the_cap_is(tmp_path: Path) -> None:
    """Once a method has started it may have acted (reached a backend, changed something), so its
    outcome is on the trail whatever its code, even when its caller's cap is spent: a caller must
    not be able to spend it first on calls that do nothing, to hide what it does next."""
    burst = 3
    vendor = tmp_path / "vendor-cli"
    vendor.write_text(BINARY_VENDOR)
    vendor.chmod(0o755)
    data_dir = short_dir("as")
    # Next to no refill: once spent, the cap stays spent for the whole test.
    server = ServerThread(data_dir, exec_commands=((str(vendor), "{Name}"),), audit_refusals_rate=0.001,
                          audit_refusals_burst=burst, **CALLERS).start()
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub, providers = v2_grpc.ConfigServiceStub(channel), pb_grpc.SecretProviderServiceStub(channel)
            invoke(stub.UpdateSmtp, v2.UpdateSmtpRequest(profile=v2_profile(BASIC_V2)), ALICE_TOKEN, rid("update"))
            instance = pb.ProviderInstance(name="binary-vendor", provider_type="exec")
            instance.initialization["Command"].value = json.dumps([str(vendor), "{Name}"])
            vendor_id = invoke(providers.CreateProvider, pb.CreateProviderRequest(provider=instance),
                               ALICE_TOKEN, rid("create")).provider.id
            spent = [rid("undecodable") for _ in range(burst + 5)]
            for request_id in spent:
                invoke(_raw(channel, CHECK_SECRET), UNDECODABLE, ALICE_TOKEN, request_id,
                       grpc.StatusCode.INVALID_ARGUMENT)

            def check(name: str) -> pb.CheckSecretRequest:
                secret = secret_pb2.SecretObject(provider=vendor_id, parameters={"Name": name})
                return pb.CheckSecretRequest(secret=secret)

            # The command runs and prints what is not text; the provider refuses a name the command
            # would read as an option.
            after = {rid("binary"): ("FAILED_PRECONDITION", providers.CheckSecret, check("binary")),
                     rid("option"): ("INVALID_ARGUMENT", providers.CheckSecret, check("-option")),
                     rid("resolve"): ("OK", stub.ResolveSmtp, v2.ResolveSmtpRequest()),
                     rid("bad-host"): ("INVALID_ARGUMENT", stub.UpdateSmtp, v2.UpdateSmtpRequest(
                         profile=v2_profile(edit(BASIC_V2, Host="bad host"))))}
            replies = {request_id: invoke(method, request, ALICE_TOKEN, request_id, getattr(grpc.StatusCode, code))
                       for request_id, (code, method, request) in after.items()}
            late = rid("undecodable-late")
            invoke(_raw(channel, CHECK_SECRET), UNDECODABLE, ALICE_TOKEN, late, grpc.StatusCode.INVALID_ARGUMENT)
            records = {r.request_id: r for r in list_records(channel, server.token)}
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)

    binary, option = list(after)[:2]
    assert "not UTF-8" in replies[binary].details() and "cannot start with '-'" in replies[option].details()
    # The cap was spent before those outcomes, and still was after them.
    assert len([i for i in spent if i in records]) == burst and late not in records
    assert {i: (records[i].identity, records[i].outcome) for i in after if i in records} == {
        i: ("alice", code) for i, (code, _, _) in after.items()}
    assert {records[binary].provider, records[option].provider} == {vendor_id}


async def _flood(target: str, count: int, token: str) -> list[str]:
    """`count` ResolveSmtp calls with `token`, 64 at a time; each must be PERMISSION_DENIED."""
    ids = [rid("flood") for _ in range(count)]
    gate = asyncio.Semaphore(64)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = v2_grpc.ConfigServiceStub(channel)

        async def one(request_id: str) -> None:
            async with gate:
                metadata = (("authorization", f"Bearer {token}"), ("x-request-id", request_id))
                try:
                    await stub.ResolveSmtp(v2.ResolveSmtpRequest(), metadata=metadata, timeout=30)
                except grpc.aio.AioRpcError as error:
                    assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error.details()
                else:
                    raise AssertionError("a refused caller was answered")

        await asyncio.gather(*(one(request_id) for request_id in ids))
    return ids


async def _seed(data_dir: Path, records: list[AuditRecord]) -> None:
    """Change records as a server stores them: each with a change, in its transaction."""
    # A data directory as a server leaves it: the key first (a database without its key is refused).
    load_key(env_value=None, key_file=data_dir / KEY_NAME, create=True)
    store = await SqliteStore.open(data_dir)
    try:
        for n, record in enumerate(records):
            await store.put(f"seed/{n}", b"seeded", audit=record.entry())
    finally:
        await store.close()


async def _open_log(directory: Path) -> AuditFile:
    return await AuditFile.open(directory, "test-replica", max_bytes=1 << 20, keep_files=3, fsync="batch",
                                stdout=None, on_health=lambda ok: None)


def test_prune_deletes_only_records_older_than_the_days_kept(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = await SqliteStore.open(tmp_path / "data")
        audit = AuditLog(store, await _open_log(tmp_path / "data" / "audit"))
        try:
            await store.put("profile", b"kept")
            written = datetime.now(UTC)
            for n in range(3):  # written now, as the server writes them
                await store.put(f"k{n}", b"v", audit=AuditRecord(datetime.now(UTC), "alice", "m", f"first-{n}", "OK").entry())
            later = written + timedelta(days=5)
            for n in range(2):
                await store.put(f"l{n}", b"v", audit=AuditRecord(later, "bob", "m", f"later-{n}", "OK").entry())

            def ids(page) -> list[str]:
                return [r.request_id for r in page[0]]

            assert await audit.prune(7) == 0  # nothing is a week old yet
            assert await audit.prune(7, now=written + timedelta(days=7) - timedelta(seconds=1)) == 0
            assert len((await audit.read())[0]) == 5
            # A week after the first batch: that batch goes, the later one stays.
            assert await audit.prune(7, now=written + timedelta(days=7, seconds=1)) == 3
            assert ids(await audit.read()) == ["later-0", "later-1"]
            # A record exactly as old as the cutoff is kept; one microsecond older is not.
            assert await audit.prune(7, now=later + timedelta(days=7)) == 0
            assert await audit.prune(7, now=later + timedelta(days=7, microseconds=1)) == 2
            assert ids(await audit.read()) == []
            assert (await store.get("profile")).value == b"kept"  # only the trail is pruned
        finally:
            await audit.close()
            await store.close()

    asyncio.run(scenario())


def test_a_server_keeping_audit_days_prunes_on_its_first_readiness_tick() -> None:
    data_dir = short_dir("ar")
    now = datetime.now(UTC)
    ages = {"ancient": 400.0, "old": 2.0, "recent": 0.5}  # days
    asyncio.run(_seed(data_dir, [
        AuditRecord(now - timedelta(days=days), "alice", "v2.ConfigService/ResolveSmtp", label, "OK")
        for label, days in ages.items()]))

    def trail(server: ServerThread) -> list[str]:
        with grpc.insecure_channel(server.target) as channel:
            return [r.request_id for r in list_records(channel, server.token)]

    try:
        # By default every record is kept, tick after tick.
        server = ServerThread(data_dir, readiness_interval=0.1, **CALLERS).start()
        try:
            time.sleep(0.6)
            assert trail(server) == list(ages)
        finally:
            server.stop()

        server = ServerThread(data_dir, readiness_interval=0.1, audit_retention_days=1, **CALLERS).start()
        started = time.monotonic()
        try:
            with grpc.insecure_channel(server.target) as channel:
                fresh = rid("fresh")
                invoke(pb_grpc.SecretProviderServiceStub(channel).CheckSecret, pb.CheckSecretRequest(
                    secret=secret_pb2.SecretObject(secret_value="v")), ALICE_TOKEN, fresh)
            while "old" in trail(server):
                assert time.monotonic() - started < 2.0, "not pruned within the first few readiness ticks"
                time.sleep(0.05)
            assert trail(server) == ["recent", fresh]
        finally:
            server.stop()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


# --- atomic with the change -----------------------------------------------------------------------


def test_every_acknowledged_change_keeps_its_record_through_kill_9() -> None:
    data_dir = short_dir("ak") / "data"
    server = ServerProcess(data_dir, env={"SMTPCONFIG_EXEC_COMMANDS": '[["/bin/true"]]'}).start()
    acknowledged: dict[str, str] = {}
    try:
        with server.channel() as channel:
            stub = v2_grpc.ConfigServiceStub(channel)
            providers = pb_grpc.SecretProviderServiceStub(channel)
            first = rid("kill-first")
            invoke(stub.UpdateSmtp, v2.UpdateSmtpRequest(profile=v2_profile(BASIC_V2)), None, first)
            acknowledged[first] = "v2.ConfigService/UpdateSmtp"

            def masked(port: int) -> tuple[str, int]:
                request_id = rid(f"kill-{port}")
                request = v2.UpdateSmtpRequest(profile=v2_profile(edit(BASIC_V2, Port=port)),
                                               update_mask=field_mask_pb2.FieldMask(paths=["Port"]))
                invoke(stub.UpdateSmtp, request, None, request_id)
                return request_id, port

            with ThreadPoolExecutor(max_workers=8) as pool:
                for request_id, _ in pool.map(masked, range(3000, 3024)):
                    acknowledged[request_id] = "v2.ConfigService/UpdateSmtp"
            instance = pb.ProviderInstance(name="kill-vendor", provider_type="exec")
            instance.initialization["Command"].value = '["/bin/true"]'
            created = rid("kill-create")
            invoke(providers.CreateProvider, pb.CreateProviderRequest(provider=instance), None, created)
            acknowledged[created] = "v2.SecretProviderService/CreateProvider"
            last = rid("kill-last")
            invoke(stub.UpdateSmtp, v2.UpdateSmtpRequest(profile=v2_profile(edit(BASIC_V2, Port=4000)),
                                                         update_mask=field_mask_pb2.FieldMask(paths=["Port"])),
                   None, last)
            acknowledged[last] = "v2.ConfigService/UpdateSmtp"
        server.kill9()  # straight after the last acknowledgement
        assert server.proc.returncode == -9

        restarted = ServerProcess(data_dir).start()
        try:
            with restarted.channel() as channel:
                records = list_records(channel, restarted.token)
                assert v2_grpc.ConfigServiceStub(channel).GetSmtp(v2.GetSmtpRequest()).profile.port == 4000
        finally:
            assert restarted.terminate() == 0
        found = {r.request_id: (r.method, r.outcome, r.identity) for r in records}
        for request_id, method in acknowledged.items():
            assert found.get(request_id) == (method, "OK", "admin"), request_id
        # And no change has more than its one record.
        assert len([r for r in records if r.request_id in acknowledged]) == len(acknowledged)
    finally:
        server.terminate()
        shutil.rmtree(data_dir.parent, ignore_errors=True)


@pytest.mark.parametrize("mark", ["\u200e", "\u200f", "\u061c", "\u202e"])
def test_a_bidirectional_mark_in_quoted_caller_text_is_recorded_as_an_escape(env: Env, mark: str) -> None:
    """U+200E LEFT-TO-RIGHT MARK, U+200F RIGHT-TO-LEFT MARK and U+061C ARABIC LETTER MARK reorder
    what `smtpconfig audit` shows as the overrides do: the record keeps them, as escapes."""
    request_id = rid("bidi")
    field = f"Relay{mark}Password"
    invoke(env.providers.CheckSecret, pb.CheckSecretRequest(profile_field=field), ALICE_TOKEN, request_id,
           grpc.StatusCode.INVALID_ARGUMENT)
    record = env.record(request_id)
    texts = [record.identity, record.message, *record.fields]
    assert not any(mark in text for text in texts), record
    assert f"Relay\\u{ord(mark):04x}Password" in " ".join(texts), record
