"""ResolveSmtp's hot path keeps what it resolved (`Applier` keeps the Basic credentials while the
resolver's generation holds still; `_Revealed` keeps the serialised answer): these tests attack
each thing that must end what is kept, through the real API, with a `file` provider on disk. Each
fails if its invalidation is taken away: the kept answer would still carry the old value.
CheckSecret keeps its answer serialised the same way (`_Checked`): answers for other values,
instances and rotations must each describe their own."""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from smtpconfig.api import convert
from smtpconfig.api.provider_servicer import _Checked
from smtpconfig.core.secret import Secret
from smtpconfig.domain.resolver import Resolution
from smtpconfig.v2 import config_service_pb2 as v2
from smtpconfig.v2 import config_service_pb2_grpc as v2_grpc
from smtpconfig.v2 import secret_pb2
from smtpconfig.v2 import secret_provider_service_pb2 as pb
from smtpconfig.v2 import secret_provider_service_pb2_grpc as pb_grpc
from tests.kits.metrics import moved, scrape
from tests.kits.support import ServerThread, short_dir

USER = "relay@example.com"
FIRST = "PLANTED-first-4b1d"
ROTATED = "PLANTED-rotated-value-77ac0e"  # another length, so the file's identity changes too
ELSEWHERE = "PLANTED-elsewhere-value-c2d9f1e3"
FILE = "smtp-password"
# The file provider's cache time (smtpconfig_file_provider.provider.TTL_SECONDS).
FILE_TTL = 5.0


class Deployment:
    def __init__(self, server: ServerThread, secrets: Path, other: Path) -> None:
        self.server = server
        self.secrets = secrets
        self.other = other
        self.channel = server.channel()
        self.config = v2_grpc.ConfigServiceStub(self.channel)
        self.providers = pb_grpc.SecretProviderServiceStub(self.channel)
        self.provider = 0

    def store(self, password: secret_pb2.SecretObject) -> None:
        self.config.UpdateSmtp(v2.UpdateSmtpRequest(profile=v2.SmtpProfile(
            id=1, host="smtp.example.com", port=587, relay_authentication_type=v2.RELAY_AUTHENTICATION_TYPE_BASIC,
            relay_username=secret_pb2.SecretObject(secret_value=USER), relay_password=password,
            sender_account=USER, sender_name="Relay", use_ssl=True,
        )), timeout=10)

    def resolve(self) -> v2.ResolveSmtpResponse:
        return self.config.ResolveSmtp(v2.ResolveSmtpRequest(), timeout=10)

    def password(self) -> str:
        return self.resolve().credentials.password


def _file_instance(name: str, directory: Path, instance_id: int = 0) -> pb.ProviderInstance:
    instance = pb.ProviderInstance(id=instance_id, name=name, provider_type="file")
    instance.initialization["Directory"].value = str(directory)
    return instance


@pytest.fixture
def deployment() -> Iterator[Deployment]:
    root = short_dir("rk")
    secrets, other = root / "secrets", root / "other"
    secrets.mkdir()
    other.mkdir()
    (secrets / FILE).write_text(FIRST)
    (other / FILE).write_text(ELSEWHERE)
    server = ServerThread(root / "data", file_directories=(secrets, other), metrics_listen="127.0.0.1:0").start()
    deployment = Deployment(server, secrets, other)
    try:
        deployment.provider = deployment.providers.CreateProvider(
            pb.CreateProviderRequest(provider=_file_instance("files", secrets)), timeout=10).provider.id
        deployment.store(secret_pb2.SecretObject(provider=deployment.provider, parameters={"File": FILE}))
        yield deployment
    finally:
        deployment.channel.close()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def _warm(deployment: Deployment) -> None:
    """Two answers: the first reads the file, the second finds both values cached and keeps them."""
    assert deployment.password() == FIRST
    assert deployment.password() == FIRST


def test_kept_answers_are_whole_with_a_cache_for_that_counts_down(deployment: Deployment) -> None:
    _warm(deployment)
    shown = deployment.config.GetSmtp(v2.GetSmtpRequest(), timeout=10)
    before = scrape(deployment.server.app.metrics_port)[1]
    answers = [deployment.resolve() for _ in range(3)]
    after = scrape(deployment.server.app.metrics_port)[1]
    for answer in answers:
        assert (answer.credentials.username, answer.credentials.password) == (USER, FIRST)
        assert answer.profile == shown.profile and answer.etag == shown.etag
        assert not answer.credentials.access_token
    left = [a.cache_for.ToTimedelta().total_seconds() for a in answers]
    assert 0 < left[-1] <= left[0] <= FILE_TTL, left
    # Kept answers are still counted as the lookups they stand for: a cache hit for the file's
    # value, a call of the inline provider for the inline username.
    assert moved(before, after, "smtpconfig_secret_cache_requests_total", result="hit") == 3
    assert moved(before, after, "smtpconfig_secret_cache_requests_total", result="miss") == 0
    assert moved(before, after, "smtpconfig_provider_calls_total", provider_type="inline", outcome="ok") == 3


def test_a_flush_ends_what_is_kept(deployment: Deployment) -> None:
    _warm(deployment)
    (deployment.secrets / FILE).write_text(ROTATED)
    assert deployment.password() == FIRST, "within the file's cache time the cached value is served"
    deployment.providers.FlushCache(pb.FlushCacheRequest(provider=deployment.provider), timeout=10)
    assert deployment.password() == ROTATED


def test_a_refresh_ends_what_is_kept(deployment: Deployment) -> None:
    _warm(deployment)
    (deployment.secrets / FILE).write_text(ROTATED)
    fresh = deployment.config.ResolveSmtp(v2.ResolveSmtpRequest(refresh=True), timeout=10)
    assert fresh.credentials.password == ROTATED
    assert deployment.password() == ROTATED


def test_a_changed_instance_ends_what_is_kept(deployment: Deployment) -> None:
    _warm(deployment)
    request = pb.UpdateProviderRequest(provider=_file_instance("files", deployment.other, deployment.provider))
    request.update_mask.paths.append("Initialization")
    deployment.providers.UpdateProvider(request, timeout=10)
    assert deployment.password() == ELSEWHERE


def test_a_new_profile_revision_ends_what_is_kept(deployment: Deployment) -> None:
    _warm(deployment)
    deployment.store(secret_pb2.SecretObject(secret_value=ELSEWHERE))
    answer = deployment.resolve()
    assert answer.credentials.password == ELSEWHERE
    assert answer.etag == deployment.config.GetSmtp(v2.GetSmtpRequest(), timeout=10).etag


def test_an_expired_value_is_read_again_without_a_flush(deployment: Deployment) -> None:
    _warm(deployment)
    (deployment.secrets / FILE).write_text(ROTATED)
    deadline = time.monotonic() + FILE_TTL + 5
    seen = FIRST
    while seen == FIRST and time.monotonic() < deadline:
        time.sleep(0.25)
        seen = deployment.password()
    assert seen == ROTATED, "a kept value outlived its cache time"


@pytest.mark.parametrize("seconds", [0.0, 1e-9, 0.5, 4.999999999, 59.25, 300.0])
def test_an_appended_cache_for_reads_as_the_field_itself(seconds: float) -> None:
    static = v2.ResolveSmtpResponse(etag="e1", credentials=v2.ResolvedCredentials(username=USER)).SerializeToString()
    parsed = v2.ResolveSmtpResponse.FromString(static + convert.cache_for_field(seconds))
    expected = v2.ResolveSmtpResponse(etag="e1", credentials=v2.ResolvedCredentials(username=USER),
                                      cache_for=convert.duration(seconds))
    assert parsed == expected and parsed.HasField("cache_for")


def _check(deployment: Deployment, provider: int) -> pb.CheckSecretResponse:
    reference = secret_pb2.SecretObject(provider=provider, parameters={"File": FILE})
    return deployment.providers.CheckSecret(pb.CheckSecretRequest(secret=reference), timeout=10)


def test_check_secret_answers_describe_their_own_value(deployment: Deployment) -> None:
    other = deployment.providers.CreateProvider(
        pb.CreateProviderRequest(provider=_file_instance("elsewhere", deployment.other)), timeout=10).provider.id
    first, second = _check(deployment, deployment.provider), _check(deployment, other)
    assert not first.cached and not second.cached
    # Warm, alternating: each answer is rebuilt for its own instance and value, never the last one's.
    for _ in range(3):
        for provider, expected in ((deployment.provider, first), (other, second)):
            answer = _check(deployment, provider)
            assert answer.cached and answer.success and answer.HasField("latency")
            assert (answer.provider, answer.provider_name, answer.fingerprint) == (
                provider, expected.provider_name, expected.fingerprint)
            assert 0 < answer.cache_remaining.ToTimedelta().total_seconds() <= FILE_TTL
    assert first.fingerprint != second.fingerprint and first.provider_name != second.provider_name
    # A rotation shows as a new fingerprint once the value is read again.
    (deployment.secrets / FILE).write_text(ROTATED)
    deployment.providers.FlushCache(pb.FlushCacheRequest(provider=deployment.provider), timeout=10)
    rotated = _check(deployment, deployment.provider)
    assert not rotated.cached and rotated.fingerprint != first.fingerprint
    assert _check(deployment, deployment.provider).fingerprint == rotated.fingerprint


@pytest.mark.parametrize(("provider_id", "version", "cached", "latency", "expires_in"), [
    (3, "v7", True, 0.000012, 4.25),
    (3, None, False, 0.5, 300.0),
    (None, None, False, 0.0, math.inf),  # an inline value: no Provider, no CacheRemaining
    (12, "", True, 1e-9, 0.0),
])
def test_a_kept_check_secret_answer_reads_as_the_message_built_whole(
    provider_id: int | None, version: str | None, cached: bool, latency: float, expires_in: float,
) -> None:
    resolution = Resolution(Secret("never-serialised"), provider_id, "file", "files", latency, cached, expires_in,
                            version, "hmac-sha256:00ff")
    expected = pb.CheckSecretResponse(
        success=True, provider=provider_id or 0, provider_name="files", provider_type="file",
        latency=convert.duration(latency), cached=cached, fingerprint="hmac-sha256:00ff", version=version or "",
    )
    if not math.isinf(expires_in):
        expected.cache_remaining.CopyFrom(convert.duration(expires_in))
    answers = _Checked()
    for _ in range(2):  # built, then kept
        wire = answers(resolution, "hmac-sha256:00ff")
        parsed = pb.CheckSecretResponse.FromString(wire)
        assert parsed == expected and parsed.HasField("latency")
        assert parsed.HasField("cache_remaining") == (not math.isinf(expires_in))
        assert b"never-serialised" not in wire
