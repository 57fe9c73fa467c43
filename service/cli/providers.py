"""`smtpconfig plugins` and `smtpconfig providers ...`: secret providers from the command line.

Secret initialization values never go on the command line (shell history, `ps`): give them with
``--set-file KEY=PATH`` or ``--set-env KEY=VAR``; ``--set KEY=VALUE`` is for plain values, and a
secret given with it is accepted with a warning that names the other two.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from google.protobuf import json_format

from smtpconfig import settings as settings_mod
from smtpconfig.cli import json as cli_json
from smtpconfig.cli.client import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    CliError,
    add_connection_args,
    call,
    default_target,
    read_payload,
)
from smtpconfig.core.secret import strip_line_ending
from smtpconfig.plugin.kinds import number_text
from smtpconfig.v2 import secret_pb2
from smtpconfig.v2 import secret_provider_service_pb2 as pb
from smtpconfig.v2 import secret_provider_service_pb2_grpc as pb_grpc

Stub = pb_grpc.SecretProviderServiceStub

_ID_HELP = "the instance's Id, as `providers list` shows it"
_IF_MATCH_HELP = "only if the instance is still at this etag (from `providers get`)"


def add_commands(sub) -> None:
    plugins = sub.add_parser(
        "plugins", help="list the plugins the running server loaded, and what a restart would change"
    )
    plugins.add_argument("--json", action="store_true", help="print JSON")
    plugins.add_argument(
        "--local", action="store_true",
        help="load the plugins in this process instead of asking the server: what a server started"
        " now from this environment and these settings would load",
    )
    add_connection_args(plugins)
    plugins.set_defaults(run=_plugins)

    providers = sub.add_parser("providers", help="secret provider types and instances")
    verbs = providers.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, help: str, run) -> argparse.ArgumentParser:
        p = _client_parser(verbs, name, help)
        p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(run=run)
        return p

    verb("types", "list provider types", _types)
    verb("list", "list provider instances", _list)
    verb("get", "show one provider instance", _get).add_argument("id", type=int, help=_ID_HELP)
    create = verb("create", "create a provider instance", _create)
    _instance_flags(create, creating=True)
    update = verb("update", "change a provider instance", _update)
    update.add_argument("id", type=int, help=_ID_HELP)
    _instance_flags(update, creating=False)
    update.add_argument("--replace", action="store_true", help="replace all values (secret ones must be given again)")
    delete = verb("delete", "delete a provider instance", _delete)
    delete.add_argument("id", type=int, help=_ID_HELP)
    delete.add_argument("--if-match", metavar="ETAG", help=_IF_MATCH_HELP)
    check = verb("check", "resolve a secret and report how (never the value)", _check)
    what = check.add_mutually_exclusive_group(required=True)
    what.add_argument("--field", help="a credential field of the stored profile, e.g. RelayPassword")
    what.add_argument("--provider", type=int, help="a provider instance Id (with --param)")
    what.add_argument("-f", "--file", help="a JSON secret object, or - for standard input")
    check.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="instance parameter")
    flush = verb("flush", "drop cached secret values, so the next use reads the backend (after a rotation)", _flush)
    flush.add_argument("--provider", type=int, metavar="ID", help="only this provider instance (default: all)")
    flush.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                       help="with --provider: only the reference these instance parameters name")


def _client_parser(verbs, name: str, help: str) -> argparse.ArgumentParser:
    p = verbs.add_parser(name, help=help)
    add_connection_args(p, timeout=30.0)
    return p


def _instance_flags(p: argparse.ArgumentParser, *, creating: bool) -> None:
    p.add_argument("--name", help="unique instance name")
    if creating:
        p.add_argument("--type", help="provider type, e.g. vault")
        p.add_argument("-f", "--file", help="JSON provider instance (Name, ProviderType, Initialization)")
    else:
        p.add_argument("--if-match", metavar="ETAG", help=_IF_MATCH_HELP)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a plain initialization value (secrets: --set-file or --set-env)")
    p.add_argument("--set-file", action="append", default=[], metavar="KEY=PATH", help="a value read from a file")
    p.add_argument("--set-env", action="append", default=[], metavar="KEY=VAR", help="a value read from an env var")


def _pairs(items: list[str], flag: str) -> list[tuple[str, str]]:
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"{flag} takes KEY=VALUE, not {item!r}", EXIT_BAD_INPUT)
        pairs.append((key, value))
    return pairs


def _initialization(args: argparse.Namespace) -> dict[str, str]:
    values = dict(_pairs(args.set, "--set"))
    for key, path in _pairs(args.set_file, "--set-file"):
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise CliError(f"--set-file {key}: cannot read {path}: {error.strerror}", EXIT_BAD_INPUT) from None
        values[key] = strip_line_ending(text)
    for key, var in _pairs(args.set_env, "--set-env"):
        if var not in os.environ:
            raise CliError(f"--set-env {key}: env var {var} is not set", EXIT_BAD_INPUT)
        values[key] = os.environ[var]
    return values


def _warn_secrets_set(args: argparse.Namespace, written: pb.ProviderInstance) -> None:
    """Name each secret parameter the command gave with --set: it still works, but the value now
    sits in shell history and was visible in `ps` while the command ran."""
    given = [key for key, _ in _pairs(args.set, "--set")]
    if not given:
        return
    secret = _secret_parameter_names(args, written)
    for key in given:
        if key in secret:
            print(
                f"warning: {key} is a secret, and --set put it on the command line (shell history, ps);"
                f" give it with --set-file {key}=PATH or --set-env {key}=VAR",
                file=sys.stderr,
            )


def _secret_parameter_names(args: argparse.Namespace, written: pb.ProviderInstance) -> set[str]:
    """Names (aliases included) of the secret parameters of the instance's type, as the server
    declares them; without providers:read, the keys the written instance shows without a value."""
    try:
        types = call(args, Stub, "ListProviderTypes", pb.ListProviderTypesRequest()).provider_types
    except CliError:
        return {key for key, value in written.initialization.items() if not value.HasField("value")}
    return {
        name
        for t in types if t.name == written.provider_type
        for p in t.parameters if p.data_type == pb.PARAMETER_DATA_TYPE_SECRET
        for name in (p.name, *p.aliases)
    }


def _print(message, args: argparse.Namespace, human: Callable[[], str]) -> None:
    if args.json:
        print(cli_json.dumps(cli_json.message_doc(message)))
    else:
        print(human())


def _describe_instance(p: pb.ProviderInstance) -> str:
    source = "config file" if p.source == pb.PROVIDER_SOURCE_CONFIG else "api"
    lines = [f"{p.id:>4}  {p.name}  ({p.provider_type}, {source}, etag {p.etag})"]
    for key in sorted(p.initialization):
        value = p.initialization[key]
        lines.append(f"        {key} = {value.value if value.HasField('value') else '(secret, set)'}")
    return "\n".join(lines)


# --- commands -----------------------------------------------------------------------------------


def _plugins(args: argparse.Namespace) -> int:
    if args.local:
        reply, where = _local_plugins(), "this environment (--local)"
    else:
        try:
            args.target = args.target or default_target()
            reply = call(args, Stub, "ListPlugins", pb.ListPluginsRequest())
        except CliError as error:
            hint = "`smtpconfig plugins --local` shows what this environment would load"
            raise CliError(f"{error}\n  {hint}", error.code) from None
        where = f"the server at {args.target}"
    failed = any(p.state == pb.PLUGIN_STATE_FAILED for p in reply.plugins)
    _print(reply, args, lambda: _describe_plugins(reply, where, local=args.local))
    return EXIT_FAILED if failed else 0


def _local_plugins() -> pb.ListPluginsResponse:
    import logging

    from smtpconfig.api.provider_servicer import plugins_to_pb
    from smtpconfig.plugin.manager import load_plugins

    logging.getLogger("smtpconfig.plugin.manager").setLevel(logging.ERROR)  # the report says it all
    settings = settings_mod.load()
    loaded = load_plugins(allow=settings.plugins_allow, block=settings.plugins_block)
    return plugins_to_pb(loaded.report, strict=settings.plugins_strict, warnings=loaded.warnings)


_STATES = {
    pb.PLUGIN_STATE_LOADED: "loaded", pb.PLUGIN_STATE_FAILED: "failed", pb.PLUGIN_STATE_BLOCKED: "blocked",
    pb.PLUGIN_STATE_NOT_ALLOWED: "not allowed", pb.PLUGIN_STATE_NOT_LOADED: "not loaded",
}


def _describe_plugins(reply: pb.ListPluginsResponse, where: str, *, local: bool) -> str:
    strict = "on" if reply.strict else "off"
    lines = [f"plugins of {where}; plugins_strict {strict}"]
    for p in reply.plugins:
        types = ", ".join(p.provider_types) or "-"
        version = f" {p.version}" if p.version else ""
        source = "builtin" if p.builtin else "entry point"
        lines.append(f"{p.name:<12} {_STATES.get(p.state, '?'):<11} {source:<11} {p.module}{version}  types: {types}")
        restart = f"{p.restart_reason}: restart the server" if p.restart_reason else ""
        lines += [f"{'':12} {note}" for note in (p.error, restart) if note]
    lines += [f"warning: {w}" for w in reply.warnings]
    if not local and any(p.restart_reason or p.state == pb.PLUGIN_STATE_FAILED for p in reply.plugins):
        lines.append("plugins are loaded when the server starts: restart it after installing, upgrading or fixing one")
    return "\n".join(lines)

def _types(args: argparse.Namespace) -> int:
    reply = call(args, Stub, "ListProviderTypes", pb.ListProviderTypesRequest())

    def human() -> str:
        lines = []
        for t in reply.provider_types:
            lines.append(f"{t.name}  ({t.display_name}; plugin {t.plugin})")
            for p in t.parameters:
                level = "instance" if p.instance_level else "init"
                need = "required" if p.required else f"optional{', default ' + p.default_value if p.default_value else ''}"
                also = f" (also {', '.join(p.aliases)})" if p.aliases else ""
                lines.append(f"    {p.name:<16} {level:<8} {_kind(p):<18} {need}{also}  {p.description}")
        return "\n".join(lines)

    _print(reply, args, human)
    return 0


def _kind(p: pb.ProviderTypeParameter) -> str:
    """``int 1..2``, ``seconds 0..86400``, ``choice raw|json``, ``url https|http``, ``path``."""
    name = pb.ParameterKind.Name(p.kind).removeprefix("PARAMETER_KIND_").lower()
    if name == "unspecified":
        name = "secret" if p.data_type == pb.PARAMETER_DATA_TYPE_SECRET else "string"
    if p.choices:
        return f"{name} {'|'.join(p.choices)}"
    if p.schemes:
        return f"{name} {'|'.join(p.schemes)}"
    if p.HasField("minimum") or p.HasField("maximum"):
        low = number_text(p.minimum) if p.HasField("minimum") else ""
        high = number_text(p.maximum) if p.HasField("maximum") else ""
        return f"{name} {low}..{high}"
    return name


def _list(args: argparse.Namespace) -> int:
    reply = call(args, Stub, "ListProviders", pb.ListProvidersRequest())
    _print(reply, args, lambda: "\n".join(_describe_instance(p) for p in reply.providers) or "no provider instances")
    return 0


def _get(args: argparse.Namespace) -> int:
    reply = call(args, Stub, "GetProvider", pb.GetProviderRequest(id=args.id))
    _print(reply.provider, args, lambda: _describe_instance(reply.provider))
    return 0


def _create(args: argparse.Namespace) -> int:
    instance = pb.ProviderInstance()
    if args.file:
        try:
            json_format.ParseDict(read_payload(args.file), instance)
        except json_format.ParseError as error:
            raise CliError(f"{args.file} is not a provider instance: {error}", EXIT_BAD_INPUT) from None
    if args.name:
        instance.name = args.name
    if args.type:
        instance.provider_type = args.type
    for key, value in _initialization(args).items():
        instance.initialization[key].value = value
    reply = call(args, Stub, "CreateProvider", pb.CreateProviderRequest(provider=instance))
    _warn_secrets_set(args, reply.provider)
    _print(reply.provider, args, lambda: "created\n" + _describe_instance(reply.provider))
    return 0


def _update(args: argparse.Namespace) -> int:
    instance = pb.ProviderInstance(id=args.id, name=args.name or "")
    for key, value in _initialization(args).items():
        instance.initialization[key].value = value
    request = pb.UpdateProviderRequest(provider=instance, etag=args.if_match or "")
    if not args.replace:
        paths = (["Name"] if args.name else []) + (["Initialization"] if instance.initialization else [])
        if not paths:
            raise CliError("nothing to change: give --name or --set/--set-file/--set-env", EXIT_BAD_INPUT)
        request.update_mask.paths.extend(paths)
    reply = call(args, Stub, "UpdateProvider", request)
    _warn_secrets_set(args, reply.provider)
    _print(reply.provider, args, lambda: "updated\n" + _describe_instance(reply.provider))
    return 0


def _delete(args: argparse.Namespace) -> int:
    call(args, Stub, "DeleteProvider", pb.DeleteProviderRequest(id=args.id, etag=args.if_match or ""))
    if not args.json:
        print(f"deleted provider instance {args.id}")
    return 0


def _check_flag(field: str) -> str:
    """The flag of `providers check` (or `providers flush`) that gave a field the server refused."""
    if field == "ProfileField":
        return "--field"
    if field in ("Secret.Provider", "Provider"):
        return "--provider"
    if field.startswith("Secret.Parameters."):
        return f"--param {field.removeprefix('Secret.Parameters.')}"
    return field


def _check(args: argparse.Namespace) -> int:
    def in_file(field: str) -> str:
        return f"{args.file}: {field.removeprefix('Secret.')}"

    flags = _check_flag
    if args.field:
        request = pb.CheckSecretRequest(profile_field=args.field)
    elif args.provider is not None:
        secret = secret_pb2.SecretObject(provider=args.provider, parameters=dict(_pairs(args.param, "--param")))
        request = pb.CheckSecretRequest(secret=secret)
    else:
        secret = secret_pb2.SecretObject()
        try:
            json_format.ParseDict(read_payload(args.file), secret)
        except json_format.ParseError as error:
            raise CliError(f"{args.file} is not a secret object: {error}", EXIT_BAD_INPUT) from None
        request = pb.CheckSecretRequest(secret=secret)
        flags = in_file
    reply = call(args, Stub, "CheckSecret", request, flags=flags)

    def human() -> str:
        where = f"provider {reply.provider} ({reply.provider_name}, {reply.provider_type})" if reply.provider else "inline value"
        cache = "from cache" if reply.cached else "fetched"
        return (
            f"resolved: {where}, {cache} in {reply.latency.ToMilliseconds()} ms\n"
            f"fingerprint: {reply.fingerprint}" + (f"\nversion: {reply.version}" if reply.version else "")
        )

    _print(reply, args, human)
    return 0


def _flush(args: argparse.Namespace) -> int:
    if args.param and args.provider is None:
        raise CliError("--param needs --provider: the instance whose reference to flush", EXIT_BAD_INPUT)
    if args.param:
        secret = secret_pb2.SecretObject(provider=args.provider, parameters=dict(_pairs(args.param, "--param")))
        request, where = pb.FlushCacheRequest(secret=secret), f"provider {args.provider}, one reference"
    elif args.provider is not None:
        request, where = pb.FlushCacheRequest(provider=args.provider), f"provider {args.provider}"
    else:
        request, where = pb.FlushCacheRequest(), "every provider"
    reply = call(args, Stub, "FlushCache", request, flags=_check_flag)
    _print(reply, args, lambda: (
        f"dropped {reply.values} cached values and {reply.failures} remembered failures ({where});"
        " the next use reads the backend again"
    ))
    return 0
