"""`python -m bench.stages` measures what it says: each stage of a method's handling leaves out
exactly its part (attacked through the real API of a running server), the audited echo checks the
token and chains its records, and a short run prints every target (no timing asserted)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import grpc
import pytest

from bench import AUTH
from bench.stages import AuditedEcho, CheckedEcho, StageSwitch
from smtpconfig.ops.audit_file import GENESIS, line_hash
from smtpconfig.v2 import secret_pb2
from smtpconfig.v2 import secret_provider_service_pb2 as pb
from tests.kits.calls import list_records
from tests.kits.support import ServerThread, short_dir

ROOT = Path(__file__).resolve().parent.parent
CHECK = "/smtpconfig.v2.SecretProviderService/CheckSecret"
GET = "/smtpconfig.v2.ConfigService/GetSmtp"
PLANTED = "PLANTED-stages-inline-value-5c1e"


@pytest.fixture
def server():
    root = short_dir("st")
    running = ServerThread(root / "data").start()
    try:
        yield running
    finally:
        running.stop()
        shutil.rmtree(root, ignore_errors=True)


def _check(server: ServerThread, token: str | None) -> tuple[bytes, str]:
    """A raw CheckSecret of an inline value: (answer bytes, the request id it was sent with)."""
    request_id = f"stage-{uuid.uuid4().hex[:12]}"
    metadata = [("x-request-id", request_id)] + ([("authorization", f"Bearer {token}")] if token else [])
    request = pb.CheckSecretRequest(secret=secret_pb2.SecretObject(secret_value=PLANTED)).SerializeToString()
    with grpc.insecure_channel(server.target) as channel:
        call = channel.unary_unary(CHECK, request_serializer=None, response_deserializer=None)
        return call(request, metadata=metadata, timeout=10), request_id


def test_each_stage_leaves_out_exactly_its_part(server: ServerThread) -> None:
    switch = StageSwitch(server.app.routes)
    token = server.token
    answers: dict[str, list[bytes]] = {}
    ids: dict[str, list[str]] = {}
    for stage in ("shape", "guard", "method", "service"):
        switch.apply(stage, CHECK)
        # The first call of a stage keeps its answer (guarded, unaudited); these are the measured ones.
        _check(server, token)
        found = [_check(server, token) for _ in range(3)]
        answers[stage] = [answer for answer, _ in found]
        ids[stage] = [request_id for _, request_id in found]
        for answer in answers[stage]:
            parsed = pb.CheckSecretResponse.FromString(answer)
            assert parsed.success and parsed.provider_type == "inline"
            assert PLANTED.encode() not in answer
        if stage == "shape":
            # No guard at all: a caller without a token is answered too.
            assert pb.CheckSecretResponse.FromString(_check(server, None)[0]).success
        else:
            with pytest.raises(grpc.RpcError) as refused:
                _check(server, None)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # The shape and guard stages send the kept answer; the method stage resolves on each call.
    assert len(set(answers["shape"])) == 1 and len(set(answers["guard"])) == 1
    with server.channel() as channel:
        recorded = {record.request_id for record in list_records(channel, token)}
    # Only the whole method writes audit records.
    assert not recorded & set(ids["shape"] + ids["guard"] + ids["method"])
    assert set(ids["service"]) <= recorded


def test_the_service_stage_restores_the_handler_and_unaudited_methods_have_no_method_stage(
    server: ServerThread,
) -> None:
    switch = StageSwitch(server.app.routes)
    normal = server.app.routes.guarded(CHECK)
    assert normal is not None and normal.spec.audit
    switch.apply("guard", CHECK)
    switch.apply("shape", CHECK)
    switch.apply("service", CHECK)
    answer, request_id = _check(server, server.token)
    assert pb.CheckSecretResponse.FromString(answer).success
    with server.channel() as channel:
        assert request_id in {record.request_id for record in list_records(channel, server.token)}
    with pytest.raises(ValueError, match="not audited"):
        switch.apply("method", GET)
    with pytest.raises(ValueError, match="not a unary method"):
        switch.apply("guard", "/smtpconfig.v2.ConfigService/WatchSmtp")
    assert server.app.routes.guarded(GET) is not None


async def _answered_then_refused(handler, path: str, request: bytes, answer: bytes, *, times: int) -> None:
    """Serve `handler`, call `path` `times` times with the bench token (each answered `answer`),
    then once with a wrong token, which must be refused UNAUTHENTICATED."""
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
            for _ in range(times):
                assert await call(request, metadata=AUTH, timeout=10) == answer
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call(request, metadata=(("authorization", "Bearer wrong"),), timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await server.stop(0)


@pytest.mark.parametrize("client_streaming", [False, True])
def test_the_audited_echo_checks_the_token_and_chains_one_record_a_call(tmp_path: Path, client_streaming: bool) -> None:
    log = tmp_path / "audit.jsonl"

    echo = AuditedEcho(b"the answer", log)
    asyncio.run(_answered_then_refused(echo.handler(client_streaming), "/any.Service/Method", b"request",
                                       b"the answer", times=3))
    lines = log.read_bytes().splitlines()
    docs = [json.loads(line) for line in lines]
    assert [doc["seq"] for doc in docs] == [1, 2, 3] and {doc["identity"] for doc in docs} == {"bench"}
    assert docs[0]["prev"] == GENESIS
    assert all(docs[n + 1]["prev"] == line_hash(lines[n]) for n in range(len(lines) - 1))


def test_the_checked_echo_makes_every_check_and_records_the_callers_request_id(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    request = pb.CheckSecretRequest(secret=secret_pb2.SecretObject(secret_value=PLANTED)).SerializeToString()
    echo = CheckedEcho(b"the answer", log)
    # The same echo for an identity without CheckSecret's permission (providers:read).
    unpermitted = CheckedEcho(b"the answer", tmp_path / "other.jsonl", grants={"bench": frozenset({"smtp:read"})})

    async def scenario() -> None:
        servers, calls = [], []
        for each in (echo, unpermitted):
            server = grpc.aio.server()
            server.add_generic_rpc_handlers((each.handler(),))
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            servers.append(server)
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
            calls.append((channel, channel.unary_unary(CHECK, request_serializer=None, response_deserializer=None)))
        (channel, call), (other_channel, other) = calls
        try:
            assert await call(request, metadata=(*AUTH, ("x-request-id", "mine-1")), timeout=10) == b"the answer"
            assert await call(request, metadata=AUTH, timeout=10) == b"the answer"
            for refused_call, code in (
                (call(request, metadata=(("authorization", "Bearer wrong"),), timeout=10), "UNAUTHENTICATED"),
                (call(b"\xff\xff", metadata=AUTH, timeout=10), "INVALID_ARGUMENT"),  # not a CheckSecretRequest
                (other(request, metadata=AUTH, timeout=10), "PERMISSION_DENIED"),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await refused_call
                assert refused.value.code().name == code
        finally:
            for each_channel in (channel, other_channel):
                await each_channel.close()
            for server in servers:
                await server.stop(0)

    asyncio.run(scenario())
    docs = [json.loads(line) for line in log.read_bytes().splitlines()]
    # Only the two answered calls have records; the refused ones stopped before the record.
    assert [(doc["seq"], doc["request_id"]) for doc in docs][0] == (1, "mine-1") and len(docs) == 2
    assert {doc["method"] for doc in docs} == {CHECK} and PLANTED not in log.read_text()
    assert not (tmp_path / "other.jsonl").read_bytes()
    # Every call was counted, by method and status code, and none holds a slot any more.
    counted = {key: sum(series[:-1]) for key, series in echo._counts.items()}
    assert counted == {(CHECK, "OK"): 2, (CHECK, "UNAUTHENTICATED"): 1, (CHECK, "INVALID_ARGUMENT"): 1}
    assert {key: sum(series[:-1]) for key, series in unpermitted._counts.items()} == {(CHECK, "PERMISSION_DENIED"): 1}
    assert echo._in_progress == 0 and not echo._by and not echo._due


def test_the_checked_echo_without_its_record_still_checks_and_writes_nothing(tmp_path: Path) -> None:
    """GetSmtp's floor in `make bench` (`--no-record`): the checks of a method that is not audited."""
    log = tmp_path / "audit.jsonl"
    echo = CheckedEcho(b"the profile", log, record=False)

    asyncio.run(_answered_then_refused(echo.handler(), GET, b"", b"the profile", times=1))
    assert not log.read_bytes()
    assert {key: sum(series[:-1]) for key, series in echo._counts.items()} == {(GET, "OK"): 1, (GET, "UNAUTHENTICATED"): 1}


def test_a_short_run_prints_every_target() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.stages", "--method", "CheckSecret", "--rounds", "1", "--seconds", "0.3",
         "--warmup", "0.2", "--in-flight", "4"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split("|")[1].strip() for line in result.stdout.splitlines() if line.startswith("| ")][1:]
    assert rows == ["bare grpc.aio echo", "audited echo, unary", "audited echo, client-streaming",
                    "audited echo, every check inline", "service: shape", "service: guard", "service: method", "service: service"]
