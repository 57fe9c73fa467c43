"""Typed provider parameters (`Parameter.kind`): what each kind takes, and that the running server
reads every value by its kind when an instance or a profile is written, hands providers typed
values, and describes the kinds in ListProviderTypes and `smtpconfig providers types`.

Everything past the parse tables goes through the real gRPC API of a real server.
"""

from __future__ import annotations

import importlib
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType

import grpc
import pytest

from smtpconfig.cli.main import main
from smtpconfig.plugin import BadParameters, Parameter, Secret
from smtpconfig.plugin.manager import load_plugins
from smtpconfig.v2 import config_service_pb2 as v2
from smtpconfig.v2 import config_service_pb2_grpc as v2_grpc
from smtpconfig.v2 import secret_pb2
from smtpconfig.v2 import secret_provider_service_pb2 as pb
from smtpconfig.v2 import secret_provider_service_pb2_grpc as pb_grpc
from tests.kits.pluginkit import install_fake
from tests.kits.profiles import BASIC_V2, edit, v2_profile
from tests.kits.support import ServerThread, short_dir, violations

# Secret initialization values given in these tests; none may appear in any answer.
EXEC_TOKEN = "PLANTED-kinds-exec-token"
VAULT_TOKEN = "PLANTED-kinds-vault-token"
SECRET_ID = "PLANTED-kinds-secret-id"
TYPED_TOKEN = "PLANTED-kinds-typed-token"

# --- 1. each kind, through Parameter.parse --------------------------------------------------------

# (reason, Parameter keyword arguments, text, the typed value the provider receives)
ACCEPTED = [
    ("string is taken as given", {}, " any text ", " any text "),
    ("bool true", {"kind": "bool"}, "true", True),
    ("bool YES in capitals", {"kind": "bool"}, "YES", True),
    ("bool On", {"kind": "bool"}, "On", True),
    ("bool 1", {"kind": "bool"}, "1", True),
    ("bool False", {"kind": "bool"}, "False", False),
    ("bool no", {"kind": "bool"}, "no", False),
    ("bool OFF", {"kind": "bool"}, "OFF", False),
    ("bool 0", {"kind": "bool"}, "0", False),
    ("bool with surrounding white space", {"kind": "bool"}, " yes\n", True),
    ("int", {"kind": "int"}, "42", 42),
    ("int negative", {"kind": "int"}, "-3", -3),
    ("int with a plus sign", {"kind": "int"}, "+7", 7),
    ("int at its minimum", {"kind": "int", "minimum": 1, "maximum": 2}, "1", 1),
    ("int at its maximum", {"kind": "int", "minimum": 1, "maximum": 2}, "2", 2),
    ("int unbounded above", {"kind": "int", "minimum": 1}, "1000000", 1000000),
    ("seconds bare", {"kind": "seconds"}, "30", 30.0),
    ("seconds fraction", {"kind": "seconds"}, "2.5", 2.5),
    ("seconds leading point", {"kind": "seconds"}, ".5", 0.5),
    ("seconds unit s", {"kind": "seconds"}, "90s", 90.0),
    ("seconds unit m", {"kind": "seconds"}, "5m", 300.0),
    ("seconds unit M in capitals", {"kind": "seconds"}, "5M", 300.0),
    ("seconds unit h", {"kind": "seconds"}, "1h", 3600.0),
    ("seconds unit d", {"kind": "seconds"}, "1d", 86400.0),
    ("seconds unit ms", {"kind": "seconds"}, "500ms", 0.5),
    ("seconds zero", {"kind": "seconds"}, "0", 0.0),
    ("seconds at the maximum", {"kind": "seconds", "maximum": 86400}, "1d", 86400.0),
    ("choice in another letter case", {"kind": "choice", "choices": ("raw", "json")}, "JSON", "json"),
    ("choice gives the declared spelling", {"kind": "choice", "choices": ("token", "AppRole")}, "approle", "AppRole"),
    ("url without a scheme gets the first", {"kind": "url", "schemes": ("https", "http")}, "vault:8200",
     "https://vault:8200"),
    ("url with a listed scheme", {"kind": "url", "schemes": ("https", "http")}, "http://vault:8200",
     "http://vault:8200"),
    ("url with a path", {"kind": "url"}, "https://pam.example/api", "https://pam.example/api"),
    ("path absolute", {"kind": "path"}, "/run/secrets", "/run/secrets"),
    ("command as a JSON array", {"kind": "command"}, '["/usr/bin/vendor", "get", "a b"]',
     ("/usr/bin/vendor", "get", "a b")),
    ("command as a shell line", {"kind": "command"}, "/usr/bin/vendor get 'a b' {Name}",
     ("/usr/bin/vendor", "get", "a b", "{Name}")),
    ("environment", {"kind": "environment"}, '{"VENDOR_REGION": "eu", "EMPTY": ""}',
     {"VENDOR_REGION": "eu", "EMPTY": ""}),
]


@pytest.mark.parametrize(("kwargs", "text", "expected"), [a[1:] for a in ACCEPTED], ids=[a[0] for a in ACCEPTED])
def test_a_kind_accepts_and_types(kwargs: dict, text: str, expected: object) -> None:
    value = Parameter("X", **kwargs).parse(text)
    assert value == expected
    assert type(value) is type(expected) or isinstance(expected, dict)


def test_seconds_are_a_float_even_when_written_whole() -> None:
    assert type(Parameter("X", kind="seconds").parse("30")) is float


def test_bool_is_a_bool_not_an_int() -> None:
    assert Parameter("X", kind="bool").parse("1") is True


def test_an_environment_is_read_only() -> None:
    environment = Parameter("X", kind="environment").parse('{"A": "1"}')
    assert isinstance(environment, MappingProxyType)
    with pytest.raises(TypeError):
        environment["B"] = "2"  # type: ignore[index]


def test_a_secret_kind_gives_a_secret_that_does_not_show_itself() -> None:
    value = Parameter("X", kind="secret").parse("PLANTED-kinds-parse-secret")
    assert isinstance(value, Secret)
    assert "PLANTED" not in repr(value) and "PLANTED" not in str(value)


# (reason, Parameter keyword arguments, text, what the refusal says)
REFUSED = [
    ("bool maybe", {"kind": "bool"}, "maybe", "must be true or false"),
    ("bool 2", {"kind": "bool"}, "2", "must be true or false"),
    ("bool t", {"kind": "bool"}, "t", "must be true or false"),
    ("int with an underscore", {"kind": "int"}, "1_000", "must be a whole number"),
    ("int in full-width digits", {"kind": "int"}, "\uff11", "must be a whole number"),
    ("int in Arabic-Indic digits", {"kind": "int"}, "\u0663", "must be a whole number"),
    ("int with a fraction", {"kind": "int"}, "1.0", "must be a whole number"),
    ("int in hexadecimal", {"kind": "int"}, "0x10", "must be a whole number"),
    ("int with a space after the sign", {"kind": "int"}, "- 1", "must be a whole number"),
    ("int with two signs", {"kind": "int"}, "+-1", "must be a whole number"),
    ("int empty", {"kind": "int"}, "", "must be a whole number"),
    ("int above its maximum", {"kind": "int", "minimum": 1, "maximum": 2}, "3", "must be a whole number from 1 to 2"),
    ("int below its minimum", {"kind": "int", "minimum": 1}, "0", "must be a whole number of at least 1"),
    ("int negative below a minimum of 0", {"kind": "int", "minimum": 0}, "-1", "of at least 0"),
    ("int above a maximum alone", {"kind": "int", "maximum": 10}, "11", "of at most 10"),
    ("seconds negative", {"kind": "seconds"}, "-1", "must be a number of seconds of at least 0"),
    ("seconds in exponent notation", {"kind": "seconds"}, "1e3", "must be a number of seconds, e.g."),
    ("seconds infinite", {"kind": "seconds"}, "inf", "must be a number of seconds, e.g."),
    ("seconds not a number", {"kind": "seconds"}, "nan", "must be a number of seconds, e.g."),
    ("seconds with an unknown unit", {"kind": "seconds"}, "1w", "must be a number of seconds, e.g."),
    ("seconds with a space before the unit", {"kind": "seconds"}, "5 m", "must be a number of seconds, e.g."),
    ("seconds unit alone", {"kind": "seconds"}, "ms", "must be a number of seconds, e.g."),
    ("seconds empty", {"kind": "seconds"}, "", "must be a number of seconds, e.g."),
    ("seconds with two units", {"kind": "seconds"}, "1d1s", "must be a number of seconds, e.g."),
    ("seconds above the maximum by unit", {"kind": "seconds", "minimum": 0, "maximum": 86400}, "25h",
     "must be a number of seconds from 0 to 86400"),
    ("seconds below the minimum", {"kind": "seconds", "minimum": 0.01}, "5ms", "of at least 0.01"),
    ("choice not listed", {"kind": "choice", "choices": ("raw", "json")}, "xml", "must be one of raw, json"),
    ("choice empty", {"kind": "choice", "choices": ("raw", "json")}, "", "must be one of raw, json"),
    ("url with a scheme not listed", {"kind": "url", "schemes": ("https", "http")}, "ftp://vault",
     "must be a URL with scheme https or http"),
    ("url http where only https is listed", {"kind": "url"}, "http://vault", "must be a URL with scheme https"),
    ("url with a user and password", {"kind": "url"}, "https://user:pw@vault:8200",
     "must not hold a user name or password"),
    ("url with a user only", {"kind": "url"}, "https://user@vault:8200", "must not hold a user name or password"),
    ("url with a query", {"kind": "url"}, "https://vault:8200/?token=x", "without query, fragment or spaces"),
    ("url with a fragment", {"kind": "url"}, "https://vault:8200/#x", "without query, fragment or spaces"),
    ("url with a space", {"kind": "url"}, "https://va ult:8200", "without query, fragment or spaces"),
    ("url with a port out of range", {"kind": "url"}, "https://vault:99999", "with a valid port"),
    ("url with a port that is no number", {"kind": "url"}, "https://vault:abc", "with a valid port"),
    ("url without a host", {"kind": "url"}, "https://", "must be a URL like https://host:port"),
    ("path relative", {"kind": "path"}, "run/secrets", "must be an absolute path"),
    ("path with leading white space", {"kind": "path"}, " /run/secrets", "must not start or end with white space"),
    ("path with trailing white space", {"kind": "path"}, "/run/secrets/.. ", "must not start or end with white space"),
    ("path empty", {"kind": "path"}, "", "must be an absolute path"),
    ("command JSON of numbers", {"kind": "command"}, "[1, 2]", "must be a JSON array of strings"),
    ("command JSON that is broken", {"kind": "command"}, '["/bin/x"', "must be a JSON array of strings"),
    ("command JSON array empty", {"kind": "command"}, "[]", "must name a program"),
    ("command with an empty program", {"kind": "command"}, '[""]', "must name a program"),
    ("command line empty", {"kind": "command"}, "   ", "must name a program"),
    ("command line with unbalanced quotes", {"kind": "command"}, "/bin/x 'a", "unbalanced quotes"),
    ("command with a NUL", {"kind": "command"}, '["/bin/x", "a\\u0000b"]', "contains a NUL character"),
    ("environment not JSON", {"kind": "environment"}, "A=1", "must be a JSON object of strings"),
    ("environment a JSON array", {"kind": "environment"}, '["A"]', "must be a JSON object of strings"),
    ("environment with a number value", {"kind": "environment"}, '{"A": 1}', "must be a JSON object of strings"),
    ("environment with a lone surrogate value", {"kind": "environment"}, '{"A": "\\ud800"}', "must hold text only"),
    ("environment with a lone surrogate name", {"kind": "environment"}, '{"\\udc00": "x"}', "must hold text only"),
    ("environment with = in a name", {"kind": "environment"}, '{"A=B": "x"}', "without '=' or NUL"),
    ("environment with NUL in a name", {"kind": "environment"}, '{"A\\u0000": "x"}', "without '=' or NUL"),
    ("environment with NUL in a value", {"kind": "environment"}, '{"A": "x\\u0000"}', "without '=' or NUL"),
    ("environment with an empty name", {"kind": "environment"}, '{"": "x"}', "without '=' or NUL"),
]


@pytest.mark.parametrize(("kwargs", "text", "says"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_a_kind_refuses_naming_the_parameter(kwargs: dict, text: str, says: str) -> None:
    with pytest.raises(BadParameters) as refused:
        Parameter("Knob", **kwargs).parse(text)
    assert refused.value.parameter == "Knob"
    assert str(refused.value).startswith("Knob ")
    assert says in str(refused.value)


# (reason, Parameter keyword arguments, what the declaration error says)
BAD_DECLARATIONS = [
    ("unknown kind", {"kind": "destination"}, "kind must be one of string, secret, bool"),
    ("int default that is no number", {"kind": "int", "required": False, "default": "abc"},
     "the default 'abc' must be a whole number"),
    ("seconds default above the maximum", {"kind": "seconds", "required": False, "default": "2d", "maximum": 86400},
     "the default '2d' must be a number of seconds from 0 to 86400"),
    ("choice default not among the choices", {"kind": "choice", "choices": ("raw",), "required": False,
                                              "default": "xml"}, "the default 'xml' must be one of raw"),
    ("bool default", {"kind": "bool", "required": False, "default": "sure"}, "the default 'sure' must be true or false"),
    ("choices without kind choice", {"choices": ("a", "b")}, "choices are given for, and only for, kind choice"),
    ("kind choice without choices", {"kind": "choice"}, "choices are given for, and only for, kind choice"),
    ("minimum above maximum", {"kind": "int", "minimum": 5, "maximum": 1}, "minimum is above maximum"),
    ("negative seconds minimum", {"kind": "seconds", "minimum": -5}, "a span of seconds is never negative"),
    ("bounds on a string", {"minimum": 1}, "minimum and maximum apply to kinds int and seconds only"),
    ("bounds on a choice", {"kind": "choice", "choices": ("a",), "maximum": 1}, "apply to kinds int and seconds"),
    ("url scheme in capitals", {"kind": "url", "schemes": ("HTTPS",)}, "schemes must be lower-case URL schemes"),
    ("url without schemes", {"kind": "url", "schemes": ()}, "schemes must be lower-case URL schemes"),
    ("secret instance parameter", {"kind": "secret", "instance_level": True}, "instance parameters name a secret"),
    ("url instance parameter", {"kind": "url", "instance_level": True}, "only initialization parameters can be of kind url"),
    ("path instance parameter", {"kind": "path", "instance_level": True}, "only initialization parameters can be of kind path"),
    ("command instance parameter", {"kind": "command", "instance_level": True},
     "only initialization parameters can be of kind command"),
    ("environment instance parameter", {"kind": "environment", "instance_level": True},
     "only initialization parameters can be of kind environment"),
]


@pytest.mark.parametrize(("kwargs", "says"), [b[1:] for b in BAD_DECLARATIONS], ids=[b[0] for b in BAD_DECLARATIONS])
def test_a_bad_declaration_fails_when_the_class_is_defined(kwargs: dict, says: str) -> None:
    with pytest.raises(ValueError) as refused:

        class Declared:  # as a plugin's provider class body states its parameters
            parameters = (Parameter("Knob", **kwargs),)

    assert str(refused.value).startswith("parameter Knob: ")
    assert says in str(refused.value)


BAD_DEFAULT_PLUGIN = """
from smtpconfig.plugin import Parameter, Resolved, Secret, SecretProvider, hookimpl

class Slow(SecretProvider):
    name = "slow"
    parameters = (Parameter("TtlSeconds", kind="seconds", required=False, default="soon"),)
    def resolve(self, instance_parameters, initialization):
        return Resolved(Secret("x"))

@hookimpl
def register_secret_providers(register):
    register(Slow)
"""


def test_a_plugin_with_a_bad_default_fails_to_load_and_says_why(tmp_path: Path, monkeypatch) -> None:
    install_fake(tmp_path, "slow", "fake_kinds_bad_default", BAD_DEFAULT_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = load_plugins()
    status = next(s for s in loaded.report if s.name == "slow")
    assert status.status == "failed"
    assert "parameter TtlSeconds: the default 'soon' must be a number of seconds" in status.error
    assert "slow" not in loaded.provider_types


# --- 2. the API reads values by kind, and stores nothing it refused ---------------------------------


@pytest.fixture
def server() -> Iterator[ServerThread]:
    """A server whose operator lets API-made exec instances run /bin/true."""
    data_dir = short_dir("sckind")
    server = ServerThread(data_dir, exec_commands=(("/bin/true",),)).start()
    yield server
    server.stop()
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def stubs(server: ServerThread) -> Iterator[tuple[pb_grpc.SecretProviderServiceStub, v2_grpc.ConfigServiceStub]]:
    with server.channel() as channel:
        yield pb_grpc.SecretProviderServiceStub(channel), v2_grpc.ConfigServiceStub(channel)


EXEC_INIT = {"Command": "/bin/true", "Token": EXEC_TOKEN}
VAULT_INIT = {"Host": "https://127.0.0.1:1", "Token": VAULT_TOKEN}
APPROLE_INIT = {"Host": "https://127.0.0.1:1", "AuthMethod": "approle", "RoleId": "smtp-role", "SecretId": SECRET_ID}


def instance(name: str, provider_type: str, init: dict[str, str]) -> pb.ProviderInstance:
    made = pb.ProviderInstance(name=name, provider_type=provider_type)
    for key, value in init.items():
        made.initialization[key].value = value
    return made


def create(providers, name: str, provider_type: str, init: dict[str, str]) -> pb.ProviderInstance:
    return providers.CreateProvider(pb.CreateProviderRequest(provider=instance(name, provider_type, init))).provider


def listed(providers) -> list[pb.ProviderInstance]:
    return list(providers.ListProviders(pb.ListProvidersRequest()).providers)


def refusal(call) -> list[tuple[str, str]]:
    """Run `call`, expect INVALID_ARGUMENT; return its BadRequest (field, description) pairs."""
    with pytest.raises(grpc.RpcError) as failure:
        call()
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT, failure.value.code()
    details = failure.value.details() or ""
    for planted in (EXEC_TOKEN, VAULT_TOKEN, SECRET_ID):
        assert planted not in details
    return violations(failure.value)


# (reason, provider type, initialization, the one field named, what it says)
BAD_VALUES = [
    ("exec TtlSeconds not a number", "exec", {**EXEC_INIT, "TtlSeconds": "abc"},
     "Initialization.TtlSeconds", "must be a number of seconds, e.g. 30, 2.5, 90s, 5m or 1h"),
    ("exec TtlSeconds above a day", "exec", {**EXEC_INIT, "TtlSeconds": "2d"},
     "Initialization.TtlSeconds", "must be a number of seconds from 0 to 86400"),
    # A required parameter given a bad value is named once, for its value: it was given.
    ("exec Command naming no program", "exec", {**EXEC_INIT, "Command": "[]"},
     "Initialization.Command", "must name a program"),
    ("exec Command with a NUL", "exec", {**EXEC_INIT, "Command": "/bin/true\0"},
     "Initialization.Command", "must be under 65536 characters, without NUL"),
    ("exec OutputFormat xml", "exec", {**EXEC_INIT, "OutputFormat": "xml"},
     "Initialization.OutputFormat", "must be one of raw, json"),
    ("exec StripNewline maybe", "exec", {**EXEC_INIT, "StripNewline": "maybe"},
     "Initialization.StripNewline", "must be true or false"),
    ("vault AuthMethod kerberos", "vault", {**VAULT_INIT, "AuthMethod": "kerberos"},
     "Initialization.AuthMethod", "must be one of token, approle, jwt"),
    ("vault KvVersion 3", "vault", {**VAULT_INIT, "KvVersion": "3"},
     "Initialization.KvVersion", "must be a whole number from 1 to 2"),
    ("vault Host with a password", "vault", {**VAULT_INIT, "Host": "https://u:p@127.0.0.1:1"},
     "Initialization.Host", "must not hold a user name or password; use the provider's secret parameters"),
    # Every value is fine by its kind; the rule across them (check_initialization) is not met.
    ("vault approle without SecretId", "vault", {k: v for k, v in APPROLE_INIT.items() if k != "SecretId"},
     "Initialization.SecretId", "AuthMethod approle needs SecretId"),
]


@pytest.mark.parametrize(("type_name", "init", "field", "says"), [b[1:] for b in BAD_VALUES],
                         ids=[b[0] for b in BAD_VALUES])
def test_create_with_a_bad_value_names_exactly_its_field_and_stores_nothing(stubs, type_name, init, field, says) -> None:
    providers, _ = stubs
    kept = create(providers, "kept", "exec", EXEC_INIT)  # so "nothing stored" is not just "empty"
    before = listed(providers)
    said = refusal(lambda: create(providers, "attempt", type_name, init))
    assert said == [(field, says)]
    assert listed(providers) == before and [p.id for p in before] == [kept.id]


def test_every_bad_value_is_named_in_one_answer(stubs) -> None:
    providers, _ = stubs
    said = refusal(lambda: create(providers, "attempt", "exec",
                                  {**EXEC_INIT, "TtlSeconds": "abc", "OutputFormat": "xml", "StripNewline": "maybe"}))
    assert sorted(field for field, _ in said) == [
        "Initialization.OutputFormat", "Initialization.StripNewline", "Initialization.TtlSeconds",
    ]
    assert listed(providers) == []


def test_a_bad_value_and_a_missing_required_one_are_named_together(stubs) -> None:
    providers, _ = stubs
    said = refusal(lambda: create(providers, "attempt", "exec", {"TtlSeconds": "abc"}))
    assert sorted(field for field, _ in said) == ["Initialization.Command", "Initialization.TtlSeconds"]
    assert listed(providers) == []


def test_update_with_a_bad_value_keeps_the_stored_instance(stubs) -> None:
    providers, _ = stubs
    made = create(providers, "vendor", "exec", {**EXEC_INIT, "TtlSeconds": "60"})
    request = pb.UpdateProviderRequest(provider=instance("", "", {"TtlSeconds": "abc"}))
    request.provider.id = made.id
    request.update_mask.paths.append("Initialization")
    assert refusal(lambda: providers.UpdateProvider(request)) == [
        ("Initialization.TtlSeconds", "must be a number of seconds, e.g. 30, 2.5, 90s, 5m or 1h")
    ]
    stored = providers.GetProvider(pb.GetProviderRequest(id=made.id)).provider
    assert stored.etag == made.etag and stored.initialization["TtlSeconds"].value == "60"


def test_update_that_breaks_a_rule_across_values_keeps_the_stored_instance(stubs) -> None:
    providers, _ = stubs
    made = create(providers, "vault", "vault", APPROLE_INIT)
    request = pb.UpdateProviderRequest(provider=instance("", "", {"SecretId": ""}))  # "" clears it
    request.provider.id = made.id
    request.update_mask.paths.append("Initialization")
    assert refusal(lambda: providers.UpdateProvider(request)) == [
        ("Initialization.SecretId", "AuthMethod approle needs SecretId")
    ]
    assert providers.GetProvider(pb.GetProviderRequest(id=made.id)).provider.etag == made.etag


# (reason, Version given in the profile's reference, what it says)
BAD_VERSIONS = [
    ("not a number", "latest", "must be a whole number"),
    ("below the minimum", "0", "must be a whole number of at least 1"),
    ("full-width digit", "\uff12", "must be a whole number"),
]


@pytest.mark.parametrize(("version", "says"), [b[1:] for b in BAD_VERSIONS], ids=[b[0] for b in BAD_VERSIONS])
def test_a_profile_reference_with_a_bad_instance_parameter_is_refused(stubs, version: str, says: str) -> None:
    providers, config = stubs
    vault = create(providers, "vault", "vault", VAULT_INIT)
    good = {"Provider": vault.id, "Parameters": {"Secret": "smtp", "Key": "password", "Version": "2"}}
    etag = config.UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(edit(BASIC_V2, RelayPassword=good)))).etag
    bad = {"Provider": vault.id, "Parameters": {"Secret": "smtp", "Key": "password", "Version": version}}
    said = refusal(lambda: config.UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(edit(BASIC_V2, RelayPassword=bad)))))
    assert said == [("RelayPassword.Parameters.Version", says)]
    stored = config.GetSmtp(v2.GetSmtpRequest())
    assert stored.etag == etag
    assert dict(stored.profile.relay_password.parameters)["Version"] == "2"


def test_check_secret_reads_instance_parameters_by_kind(stubs) -> None:
    providers, _ = stubs
    vault = create(providers, "vault", "vault", VAULT_INIT)
    secret = secret_pb2.SecretObject(provider=vault.id, parameters={"Secret": "smtp", "Key": "password", "Version": "latest"})
    said = refusal(lambda: providers.CheckSecret(pb.CheckSecretRequest(secret=secret)))
    assert [field for field, _ in said] == ["Secret.Parameters.Version"]


# (reason, provider type, initialization)
OTHER_SPELLINGS = [
    ("exec StripNewline YES", "exec", {**EXEC_INIT, "StripNewline": "YES"}),
    ("exec TtlSeconds 5m", "exec", {**EXEC_INIT, "TtlSeconds": "5m"}),
    ("exec OutputFormat JSON", "exec", {**EXEC_INIT, "OutputFormat": "JSON"}),
    ("vault AuthMethod AppRole", "vault", {**APPROLE_INIT, "AuthMethod": "AppRole"}),
    ("vault KvVersion with a plus", "vault", {**VAULT_INIT, "KvVersion": "+1", "Path": "kv"}),
    ("vault Host without a scheme", "vault", {**VAULT_INIT, "Host": "127.0.0.1:8200"}),
]


@pytest.mark.parametrize(("type_name", "init"), [o[1:] for o in OTHER_SPELLINGS], ids=[o[0] for o in OTHER_SPELLINGS])
def test_a_value_in_another_spelling_is_accepted(stubs, type_name: str, init: dict[str, str]) -> None:
    providers, _ = stubs
    made = create(providers, "spelled", type_name, init)
    assert [p.id for p in listed(providers)] == [made.id]


# --- 3. the provider receives typed values ---------------------------------------------------------

TYPED_PLUGIN = """
import json
from collections.abc import Mapping
from smtpconfig.plugin import BadParameters, Parameter, Resolved, Secret, SecretProvider, hookimpl

class Typed(SecretProvider):
    name = "typed"
    parameters = (
        Parameter("Label", required=False),
        Parameter("Token", kind="secret"),
        Parameter("Enabled", kind="bool"),
        Parameter("Strict", kind="bool", required=False, default="no"),
        Parameter("Retries", kind="int", minimum=0, maximum=10),
        Parameter("Workers", kind="int", required=False, default="4"),
        Parameter("Wait", kind="seconds"),
        Parameter("Grace", kind="seconds", required=False, default="1m"),
        Parameter("Mode", kind="choice", choices=("Fast", "Careful")),
        Parameter("Tier", kind="choice", choices=("Gold", "Silver"), required=False, default="silver"),
        Parameter("Endpoint", kind="url", schemes=("https", "http")),
        Parameter("Name", instance_level=True),
        Parameter("Limit", kind="int", instance_level=True),
        Parameter("Delay", kind="seconds", instance_level=True),
        Parameter("Pick", kind="choice", choices=("First", "Last"), instance_level=True),
        Parameter("Verbose", kind="bool", instance_level=True, required=False, default="off"),
        Parameter("Unset", instance_level=True, required=False),
    )

    @classmethod
    def check_initialization(cls, initialization):
        # Typed values here too: a text "false" would be truthy.
        if initialization["Strict"] and initialization["Retries"] == 0:
            raise BadParameters("Strict needs Retries", "Retries")

    def resolve(self, instance_parameters, initialization):
        def seen(values):
            shown = {}
            for name, value in values.items():
                if isinstance(value, Secret):
                    shown[name] = ["Secret", None]  # never the value itself
                elif isinstance(value, Mapping):
                    shown[name] = ["Mapping", dict(value)]
                else:
                    shown[name] = [type(value).__name__, value]
            return shown
        return Resolved(Secret(json.dumps({"instance": seen(instance_parameters), "init": seen(initialization)})))

@hookimpl
def register_secret_providers(register):
    register(Typed)
"""


@pytest.fixture
def typed_server(tmp_path: Path, monkeypatch) -> Iterator[ServerThread]:
    """A server with the third-party `typed` provider installed, as pip would leave it."""
    site = tmp_path / "site"
    site.mkdir()
    install_fake(site, "typed", "fake_kinds_typed", TYPED_PLUGIN)
    monkeypatch.syspath_prepend(str(site))
    data_dir = short_dir("sckind")
    server = ServerThread(data_dir).start()
    yield server
    server.stop()
    shutil.rmtree(data_dir, ignore_errors=True)


TYPED_INIT = {
    "Token": TYPED_TOKEN, "Enabled": "YES", "Retries": "+3", "Wait": "500ms", "Mode": "careful",
    "Endpoint": "pam.example:8443",
}


def test_the_provider_receives_typed_values_with_defaults_filled_in(typed_server: ServerThread) -> None:
    with typed_server.channel() as channel:
        providers, config = pb_grpc.SecretProviderServiceStub(channel), v2_grpc.ConfigServiceStub(channel)
        made = create(providers, "typed", "typed", TYPED_INIT)
        reference = {"Provider": made.id,
                     "Parameters": {"Name": "smtp", "Limit": "7", "Delay": "2m", "Pick": "LAST"}}
        config.UpdateSmtp(v2.UpdateSmtpRequest(profile=v2_profile(edit(BASIC_V2, RelayPassword=reference))))
        answer = config.ResolveSmtp(v2.ResolveSmtpRequest())
    got = json.loads(answer.credentials.password)
    assert got["init"] == {
        "Token": ["Secret", None],
        "Enabled": ["bool", True],
        "Strict": ["bool", False],  # default "no"
        "Retries": ["int", 3],
        "Workers": ["int", 4],  # default "4"
        "Wait": ["float", 0.5],
        "Grace": ["float", 60.0],  # default "1m"
        "Mode": ["str", "Careful"],  # the declared spelling
        "Tier": ["str", "Silver"],  # default "silver", in the declared spelling
        "Endpoint": ["str", "https://pam.example:8443"],  # the first scheme added
    }
    assert got["instance"] == {
        "Name": ["str", "smtp"],
        "Limit": ["int", 7],
        "Delay": ["float", 120.0],
        "Pick": ["str", "Last"],
        "Verbose": ["bool", False],  # default "off"
    }
    assert TYPED_TOKEN not in answer.credentials.password


def test_check_initialization_gets_typed_values(typed_server: ServerThread) -> None:
    with typed_server.channel() as channel:
        providers = pb_grpc.SecretProviderServiceStub(channel)
        # A text "false" would pass `if initialization["Strict"]` as true; a bool does not.
        create(providers, "lenient", "typed", {**TYPED_INIT, "Strict": "false", "Retries": "0"})
        said = refusal(lambda: create(providers, "strict", "typed", {**TYPED_INIT, "Strict": "on", "Retries": "0"}))
        assert said == [("Initialization.Retries", "Strict needs Retries")]
        assert [p.name for p in listed(providers)] == ["lenient"]


# --- 4. the kinds as ListProviderTypes and the CLI describe them -----------------------------------


def _parameters(providers, type_name: str) -> dict[str, pb.ProviderTypeParameter]:
    types = providers.ListProviderTypes(pb.ListProviderTypesRequest()).provider_types
    return {p.name: p for p in next(t for t in types if t.name == type_name).parameters}


def test_list_provider_types_describes_exec_kinds(stubs) -> None:
    providers, _ = stubs
    exec_ = _parameters(providers, "exec")
    ttl = exec_["TtlSeconds"]
    assert (ttl.kind, ttl.minimum, ttl.maximum) == (pb.PARAMETER_KIND_SECONDS, 0, 86400)
    assert ttl.HasField("minimum") and ttl.HasField("maximum") and not ttl.binds_secrets
    output = exec_["OutputFormat"]
    assert (output.kind, list(output.choices), output.default_value) == (pb.PARAMETER_KIND_CHOICE, ["raw", "json"], "raw")
    assert not output.HasField("minimum") and not output.HasField("maximum")
    assert exec_["StripNewline"].kind == pb.PARAMETER_KIND_BOOL
    assert (exec_["Command"].kind, exec_["Command"].binds_secrets) == (pb.PARAMETER_KIND_COMMAND, True)
    assert (exec_["Environment"].kind, exec_["Environment"].binds_secrets) == (pb.PARAMETER_KIND_ENVIRONMENT, True)
    assert exec_["WorkingDirectory"].kind == pb.PARAMETER_KIND_PATH
    token = exec_["Token"]
    assert (token.kind, token.data_type) == (pb.PARAMETER_KIND_SECRET, pb.PARAMETER_DATA_TYPE_SECRET)
    assert exec_["Name"].kind == pb.PARAMETER_KIND_STRING
    assert all(not p.schemes for p in exec_.values())  # schemes belong to url parameters only


def test_list_provider_types_describes_vault_kinds(stubs) -> None:
    providers, _ = stubs
    vault = _parameters(providers, "vault")
    host = vault["Host"]
    assert (host.kind, list(host.schemes), host.binds_secrets) == (pb.PARAMETER_KIND_URL, ["https", "http"], True)
    version = vault["Version"]
    assert (version.kind, version.minimum, version.instance_level) == (pb.PARAMETER_KIND_INT, 1, True)
    assert version.HasField("minimum") and not version.HasField("maximum")
    kv = vault["KvVersion"]
    assert (kv.kind, kv.minimum, kv.maximum) == (pb.PARAMETER_KIND_INT, 1, 2)
    auth = vault["AuthMethod"]
    assert (auth.kind, list(auth.choices), auth.binds_secrets) == (pb.PARAMETER_KIND_CHOICE, ["token", "approle", "jwt"], True)
    assert vault["Namespace"].binds_secrets and not vault["Secret"].binds_secrets
    assert vault["CaBundle"].kind == pb.PARAMETER_KIND_PATH


def test_the_cli_shows_kinds_with_their_bounds_and_choices(server: ServerThread, capsys) -> None:
    code = main(["providers", "types", *server.cli_args])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.splitlines()

    def line(type_name: str, parameter: str) -> str:
        start = lines.index(next(t for t in lines if t.startswith(f"{type_name}  (")))
        return next(x for x in lines[start + 1:] if x.split()[0] == parameter)

    assert " seconds 0..86400 " in line("exec", "TtlSeconds")
    assert " seconds 0.01..3600 " in line("exec", "TimeoutSeconds")
    assert " choice raw|json " in line("exec", "OutputFormat")
    assert " bool " in line("exec", "StripNewline")
    assert " command " in line("exec", "Command")
    assert " secret " in line("exec", "Token")
    assert " url https|http " in line("vault", "Host")
    assert " int 1..2 " in line("vault", "KvVersion")
    assert " int 1.. " in line("vault", "Version")
    assert " choice token|approle|jwt " in line("vault", "AuthMethod")
    assert " path " in line("vault", "CaBundle")


def test_the_cli_json_carries_the_kinds(server: ServerThread, capsys) -> None:
    code = main(["providers", "types", *server.cli_args, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    types = {t["Name"]: {p["Name"]: p for p in t["Parameters"]} for t in json.loads(out)["ProviderTypes"]}
    ttl = types["exec"]["TtlSeconds"]
    assert (ttl["Kind"], ttl["Minimum"], ttl["Maximum"]) == ("PARAMETER_KIND_SECONDS", 0, 86400)
    assert types["vault"]["Host"]["Schemes"] == ["https", "http"] and types["vault"]["Host"]["BindsSecrets"]
    assert types["exec"]["OutputFormat"]["Choices"] == ["raw", "json"]


# --- 5. a stored value a plugin upgrade no longer takes --------------------------------------------

LEVELS = """
from smtpconfig.plugin import Parameter, Resolved, Secret, SecretProvider, hookimpl

class Levels(SecretProvider):
    name = "levels"
    parameters = (
        Parameter("Level", kind="int", minimum=1, maximum={maximum}),
        Parameter("Name", instance_level=True),
    )
    def resolve(self, instance_parameters, initialization):
        return Resolved(Secret(f"level-{{initialization['Level']}}"))

@hookimpl
def register_secret_providers(register):
    register(Levels)
"""
LEVELS_MODULE = "fake_kinds_levels"


def _install_levels(site: Path, maximum: int) -> None:
    """The `levels` plugin allowing Level up to `maximum`; a second call upgrades it in place."""
    shutil.rmtree(site / f"{LEVELS_MODULE}-0.1.dist-info", ignore_errors=True)
    shutil.rmtree(site / "__pycache__", ignore_errors=True)
    install_fake(site, "levels", LEVELS_MODULE, LEVELS.format(maximum=maximum))
    sys.modules.pop(LEVELS_MODULE, None)  # the next server start imports the new source
    importlib.invalidate_caches()


def test_a_stored_value_the_upgraded_plugin_refuses_is_reported_and_can_be_fixed(tmp_path: Path, monkeypatch) -> None:
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    _install_levels(site, maximum=10)
    data_dir = short_dir("sckind")
    try:
        before = ServerThread(data_dir).start()
        try:
            with before.channel() as channel:
                made = create(pb_grpc.SecretProviderServiceStub(channel), "levelled", "levels", {"Level": "7"})
        finally:
            before.stop()

        _install_levels(site, maximum=5)  # the upgrade takes at most 5
        after = ServerThread(data_dir).start()  # a stored instance does not stop the server
        try:
            with after.channel() as channel:
                providers = pb_grpc.SecretProviderServiceStub(channel)
                secret = secret_pb2.SecretObject(provider=made.id, parameters={"Name": "smtp"})
                with pytest.raises(grpc.RpcError) as unusable:
                    providers.CheckSecret(pb.CheckSecretRequest(secret=secret))
                assert unusable.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert unusable.value.details() == (
                    f"provider instance {made.id} (levelled) cannot be used as stored:"
                    " Initialization.Level must be a whole number from 1 to 5; update it"
                )
                # Reads still show it, as stored.
                shown = providers.GetProvider(pb.GetProviderRequest(id=made.id)).provider
                assert shown.initialization["Level"].value == "7" and shown.etag == made.etag
                # An update that leaves Level as it is says what to fix...
                rename = pb.UpdateProviderRequest(provider=pb.ProviderInstance(id=made.id, name="renamed"))
                rename.update_mask.paths.append("Name")
                assert [f for f, _ in refusal(lambda: providers.UpdateProvider(rename))] == ["Initialization.Level"]
                # ...and one that fixes it makes the instance usable again.
                fix = pb.UpdateProviderRequest(provider=instance("", "", {"Level": "4"}))
                fix.provider.id = made.id
                fix.update_mask.paths.append("Initialization")
                providers.UpdateProvider(fix)
                assert providers.CheckSecret(pb.CheckSecretRequest(secret=secret)).success
        finally:
            after.stop()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
        sys.modules.pop(LEVELS_MODULE, None)
