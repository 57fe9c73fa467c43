"""`smtpconfig`: run the server, or talk to one as an operator.

    smtpconfig serve [--config FILE] [--data-dir DIR] [--listen HOST:PORT] ...
    smtpconfig get [--api v1|v2] [--json]
    smtpconfig put -f profile.json [--api auto|v1|v2] [--mask Port,SenderName] [--if-match ETAG]

Profiles are read and written as Keyfactor Command's JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2

from service import settings as settings_mod
from service.errors import SmtpConfigError
from smtpconfig.v1 import config_service_pb2 as v1
from smtpconfig.v1 import config_service_pb2_grpc as v1_grpc
from smtpconfig.v2 import config_service_pb2 as v2
from smtpconfig.v2 import config_service_pb2_grpc as v2_grpc

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1

# Keys Keyfactor payloads may carry that mean nothing here.
_IGNORED_KEYS = {"SenderAddress": "deprecated by Keyfactor Command", "TestRecipient": "used only by test"}
_V2_ONLY_KEYS = {"ClientId", "ClientSecret", "TokenEndpoint", "Scope", "Audience", "RequestHeaders"}
_AUTH_NAMES = {0: "Anonymous", 2: "Basic", 3: "OAuth client credentials"}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("smtpconfig")
    except PackageNotFoundError:
        return "unknown (not installed)"


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except CliError as error:
        print(f"smtpconfig: {error}", file=sys.stderr)
        return error.code
    except settings_mod.SettingsError as error:
        print(f"smtpconfig: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smtpconfig", description="SMTP relay profile service and its client.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the gRPC server")
    serve.add_argument("--config", type=Path, help="TOML settings file (env: SMTPCONFIG_CONFIG)")
    serve.add_argument("--data-dir", help="data directory (default ./smtpconfig-data)")
    serve.add_argument(
        "--listen", action="append", help="TCP address host:port, repeatable (default 127.0.0.1:2587)"
    )
    serve.add_argument("--unix-socket", help="Unix socket path ('' for none; default DATA_DIR/smtpconfig.sock)")
    serve.add_argument("--key-file", help="encryption key file (default DATA_DIR/secret.key, generated)")
    serve.add_argument("--grace-period", type=float, help="seconds to drain calls on SIGTERM (default 10)")
    serve.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    serve.set_defaults(run=_serve)

    def client(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.add_argument(
            "--target",
            help="server address: host:port or unix:PATH (env SMTPCONFIG_TARGET; default: the data"
            " directory's socket, else 127.0.0.1:2587)",
        )
        p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for an answer")
        return p

    get = client("get", "show the stored SMTP profile")
    get.add_argument("--api", choices=("v1", "v2"), default="v2", help="API version to read through")
    get.add_argument("--json", action="store_true", help="print Keyfactor JSON (as `put -f` takes)")
    get.set_defaults(run=_get)

    put = client("put", "store an SMTP profile from a Keyfactor JSON file")
    put.add_argument("-f", "--file", required=True, help="JSON file, or - for standard input")
    put.add_argument(
        "--api", choices=("auto", "v1", "v2"), default="auto",
        help="API version of the payload; auto: v1 when credentials are plain strings, else v2",
    )
    put.add_argument("--mask", help="comma-separated fields to change (e.g. Port,UseSSL); others stay")
    put.add_argument("--if-match", metavar="ETAG", help="only apply on top of this revision")
    put.set_defaults(run=_put)
    return parser


# --- serve --------------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    from service.server import serve

    flags = {
        "data_dir": args.data_dir,
        "listen": args.listen,
        "unix_socket": args.unix_socket,
        "key_file": args.key_file,
        "grace_period": args.grace_period,
        "log_level": args.log_level,
    }
    settings = settings_mod.load(flags=flags, config_file=args.config)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        asyncio.run(serve(settings))
    except SmtpConfigError as error:
        logging.getLogger("smtpconfig").error("cannot start: %s", error)
        return EXIT_FAILED
    return 0


# --- client commands ----------------------------------------------------------------------------


def default_target(env: dict[str, str] | None = None) -> str:
    env = dict(os.environ) if env is None else env
    if env.get("SMTPCONFIG_TARGET"):
        return env["SMTPCONFIG_TARGET"]
    data_dir = Path(env.get("SMTPCONFIG_DATA_DIR") or settings_mod.DEFAULT_DATA_DIR)
    socket = Path(env.get("SMTPCONFIG_UNIX_SOCKET") or data_dir / settings_mod.SOCKET_NAME)
    if socket.exists():
        return f"unix:{socket.absolute()}"
    listen = [a for a in env.get("SMTPCONFIG_LISTEN", "").split(",") if a.strip()]
    return listen[0].strip() if listen else settings_mod.DEFAULT_LISTEN


def _call(args: argparse.Namespace, stub_class, method: str, request):
    target = args.target or default_target()
    with grpc.insecure_channel(target) as channel:
        stub = stub_class(channel)
        try:
            return getattr(stub, method)(request, timeout=args.timeout)
        except grpc.RpcError as error:
            raise _explain(error, target) from None


def _explain(error: grpc.RpcError, target: str) -> CliError:
    code = error.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        return CliError(f"cannot reach the server at {target}: is it running (make run)? ({error.details()})")
    lines = [f"{code.name}: {error.details()}"] if code != grpc.StatusCode.INVALID_ARGUMENT else []
    for key, value in error.trailing_metadata() or ():
        if key != "grpc-status-details-bin":
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                lines = ["the server refused the profile (nothing was stored):"]
                lines += [f"  {v.field}: {v.description}" for v in bad.field_violations]
    exit_code = EXIT_BAD_INPUT if code == grpc.StatusCode.INVALID_ARGUMENT else EXIT_FAILED
    return CliError("\n".join(lines), exit_code)


def profile_doc(profile) -> dict[str, Any]:
    """Keyfactor JSON of a profile message: PascalCase names, integer enums, every field."""
    doc = json_format.MessageToDict(
        profile, use_integers_for_enums=True, always_print_fields_with_no_presence=True
    )
    for value in doc.values():
        if isinstance(value, dict) and value.get("Parameters") == {}:
            del value["Parameters"]  # an inline secret object has no parameters to show
    return doc


def _get(args: argparse.Namespace) -> int:
    if args.api == "v1":
        response = _call(args, v1_grpc.ConfigServiceStub, "GetSmtp", v1.GetSmtpRequest())
    else:
        response = _call(args, v2_grpc.ConfigServiceStub, "GetSmtp", v2.GetSmtpRequest())
    if args.json:
        doc = profile_doc(response.profile)
        if args.api == "v1":
            doc.pop("RelayPassword")  # v1 never returns it; an empty string would read as a value
        print(json.dumps(doc, indent=2, ensure_ascii=False))
        return 0
    print(_describe(response, args.api))
    return 0


def _describe(response, api: str) -> str:
    doc = profile_doc(response.profile)
    when = response.update_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = [f"SMTP profile (API {api}), etag {response.etag}, updated {when}"]
    for key, value in doc.items():
        if key == "RelayAuthenticationType":
            value = f"{value} ({_AUTH_NAMES.get(value, 'unknown')})"
        elif isinstance(value, dict):
            value = _describe_secret(value)
        elif isinstance(value, list):
            value = ", ".join(f"{h['Name']}: {h['Value']}" for h in value) or "-"
        elif value in ("", None):
            value = "-"
        lines.append(f"  {key:<24} {value}")
    return "\n".join(lines)


def _describe_secret(obj: dict[str, Any]) -> str:
    if obj.get("Provider"):
        params = ", ".join(f"{k}={v}" for k, v in sorted(obj.get("Parameters", {}).items()))
        return f"provider {obj['Provider']} ({params})"
    if "SecretValue" in obj:
        return f"inline: {obj['SecretValue']}"
    return "inline (value withheld)" if obj.get("HasValue") else "-"


def read_payload(path: str) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise CliError(f"cannot read {path}: {error.strerror}", EXIT_BAD_INPUT) from None
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as error:
        raise CliError(f"{path} is not JSON: {error.msg} at line {error.lineno} column {error.colno}", EXIT_BAD_INPUT) from None
    if not isinstance(payload, dict):
        raise CliError(f"{path} must hold a JSON object with the profile's fields", EXIT_BAD_INPUT)
    return payload


def detect_api(payload: dict[str, Any]) -> str:
    credentials = [payload.get(k) for k in ("RelayUsername", "RelayPassword")]
    if any(isinstance(c, str) for c in credentials):
        return "v1"
    return "v2"


def _put(args: argparse.Namespace) -> int:
    payload = read_payload(args.file)
    for key, why in _IGNORED_KEYS.items():
        if payload.pop(key, None) is not None:
            print(f"smtpconfig: ignoring {key} ({why})", file=sys.stderr)
    api = detect_api(payload) if args.api == "auto" else args.api
    if api == "v1" and _V2_ONLY_KEYS & payload.keys():
        names = ", ".join(sorted(_V2_ONLY_KEYS & payload.keys()))
        raise CliError(f"{args.file}: {names} exist only in API v2; use --api v2 with secret objects", EXIT_BAD_INPUT)
    module, stub_class = (v1, v1_grpc.ConfigServiceStub) if api == "v1" else (v2, v2_grpc.ConfigServiceStub)
    profile = module.SmtpProfile()
    try:
        json_format.ParseDict(payload, profile)
    except json_format.ParseError as error:
        raise CliError(f"{args.file} does not fit the API {api} profile: {error}", EXIT_BAD_INPUT) from None
    request = module.UpdateSmtpRequest(profile=profile, etag=args.if_match or "")
    if args.mask:
        request.update_mask.paths.extend(p.strip() for p in args.mask.split(",") if p.strip())
    response = _call(args, stub_class, "UpdateSmtp", request)
    print(f"stored; etag {response.etag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
