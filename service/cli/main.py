"""`smtpconfig`: run the server, or talk to one as an operator.

    smtpconfig serve [--config FILE] [--data-dir DIR] [--listen HOST:PORT] ...
    smtpconfig get [--api v1|v2] [--json]
    smtpconfig put -f profile.json [--api auto|v1|v2] [--mask Port,SenderName] [--if-match ETAG]
    smtpconfig watch [--json] [--after REV]

Profiles are read and written as Keyfactor Command's JSON.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from google.protobuf import json_format

from smtpconfig.ops import grpc_log  # first: it sets gRPC's log level, which grpc reads when imported

# isort: split
from smtpconfig import settings as settings_mod
from smtpconfig.cli import json as cli_json
from smtpconfig.cli.admin import add_commands as add_admin_commands
from smtpconfig.cli.client import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_PIPE, CliError, add_connection_args, call, read_payload
from smtpconfig.cli.providers import add_commands as add_provider_commands
from smtpconfig.cli.store import add_commands as add_store_commands
from smtpconfig.cli.supervisor import add_serve_arguments, load_settings, supervise
from smtpconfig.cli.watch import add_command as add_watch_command
from smtpconfig.core import aio
from smtpconfig.core.errors import SmtpConfigError
from smtpconfig.core.workers import WorkerRole
from smtpconfig.ops import logs
from smtpconfig.v1 import config_service_pb2 as v1
from smtpconfig.v1 import config_service_pb2_grpc as v1_grpc
from smtpconfig.v2 import config_service_pb2 as v2
from smtpconfig.v2 import config_service_pb2_grpc as v2_grpc

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


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    args.exec_supervisor = argv is None  # run as a program: `serve` may become the supervisor
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        code = args.run(args)
        sys.stdout.flush()  # a reader gone shows here, not in the interpreter's last flush
        return code
    except BrokenPipeError:
        return _reader_gone()
    except CliError as error:
        print(f"smtpconfig: {error}", file=sys.stderr)
        return error.code
    except settings_mod.SettingsError as error:
        print(f"smtpconfig: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130


def _reader_gone() -> int:
    """`smtpconfig audit | head -1`: the reader has what it wanted. End as a Unix tool that SIGPIPE
    ended does, silently and with the status a shell gives one (128 + 13), and point stdout at
    /dev/null so Python's final flush does not complain about the pipe a second time."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass  # stdout is no file (an embedding caller's): nothing left to flush into the pipe
    return EXIT_PIPE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smtpconfig", description="SMTP relay profile service and its client.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the gRPC server")
    add_serve_arguments(serve)
    serve.set_defaults(run=_serve)

    def client(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        add_connection_args(p)
        return p

    get = client("get", "show the stored SMTP profile")
    get.add_argument("--api", choices=("v1", "v2"), default="v2", help="API version to read through (default %(default)s)")
    get.add_argument("--json", action="store_true", help="print Keyfactor JSON with its etag (`put -f` takes it back)")
    get.set_defaults(run=_get)

    put = client("put", "store an SMTP profile from a Keyfactor JSON file")
    put.add_argument("-f", "--file", required=True, help="JSON file, or - for standard input")
    put.add_argument(
        "--api", choices=("auto", "v1", "v2"), default="auto",
        help="API version of the payload; auto: v1 when credentials are plain strings, else v2",
    )
    put.add_argument("--mask", help="comma-separated fields to change (e.g. Port,UseSSL); others stay")
    put.add_argument(
        "--if-match", metavar="ETAG",
        help="only apply on top of this revision (default: the file's own etag, as `get --json` writes it)",
    )
    put.set_defaults(run=_put)

    test = client("test", "send a test message through the relay and report each step")
    test.add_argument("--to", required=True, metavar="ADDRESS", help="recipient of the test message")
    test.add_argument("-f", "--file", help="test this Keyfactor JSON profile instead of the stored one (not saved)")
    test.add_argument("--api", choices=("auto", "v1", "v2"), default="auto",
                      help="API version of the file (default %(default)s: v1 when credentials are plain strings)")
    test.add_argument("--json", action="store_true", help="print the step report as JSON")
    test.set_defaults(run=_test, timeout=120.0)

    resolve = client("resolve", "print the effective profile WITH its credentials (needs permission)")
    resolve.add_argument("--json", action="store_true", help="print JSON")
    resolve.add_argument("--refresh", action="store_true",
                         help="bypass every cache: re-read the secrets and fetch a new token"
                              " (at most once per identity per refresh_interval_seconds)")
    resolve.set_defaults(run=_resolve)

    add_watch_command(sub)
    add_provider_commands(sub)
    add_admin_commands(sub)
    add_store_commands(sub)
    return parser


# --- serve --------------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    worker = WorkerRole.decode(args.worker) if args.worker else None
    serve_argv = args.argv[args.argv.index("serve") + 1:]
    if worker is None and settings.processes > 1:
        # The supervisor of `workers` processes. Run as a program, become it afresh: it needs
        # none of what this process has imported (grpc, protobuf), about 30 MiB of memory.
        if args.exec_supervisor:
            sys.stdout.flush()
            sys.stderr.flush()
            os.execv(sys.executable, [sys.executable, "-m", "smtpconfig.cli.supervisor", *serve_argv])
        logs.configure(settings.log_level, settings.log_format)
        return supervise(settings, serve_argv)
    from smtpconfig.app import serve

    if settings.log_format == "json":
        grpc_log.wrap_stderr_as_json()
    logs.configure(settings.log_level, settings.log_format)
    try:
        aio.run(serve(settings, worker), settings.event_loop)
    except SmtpConfigError as error:
        logging.getLogger("smtpconfig").error("cannot start: %s", error)
        return EXIT_FAILED
    return 0


# --- client commands ----------------------------------------------------------------------------


def profile_doc(profile) -> dict[str, Any]:
    """Keyfactor JSON of a profile message, in the CLI's one JSON dialect (`cli_json`)."""
    doc = cli_json.message_doc(profile)
    for value in doc.values():
        if isinstance(value, dict) and value.get("Parameters") == {}:
            del value["Parameters"]  # an inline secret object has no parameters to show
    return doc


def _get(args: argparse.Namespace) -> int:
    if args.api == "v1":
        response = call(args, v1_grpc.ConfigServiceStub, "GetSmtp", v1.GetSmtpRequest())
    else:
        response = call(args, v2_grpc.ConfigServiceStub, "GetSmtp", v2.GetSmtpRequest())
    if args.json:
        doc = profile_doc(response.profile)
        if args.api == "v1":
            doc.pop("RelayPassword")  # v1 never returns it; an empty string would read as a value
        # The revision read rides along, so `put -f` of this file applies only on top of it.
        reply = cli_json.message_doc(response)
        doc.update(etag=reply["etag"], updateTime=reply["updateTime"])
        print(cli_json.dumps(doc))
        return 0
    print(_describe(response, args.api))
    return 0


def _describe(response, api: str) -> str:
    doc = profile_doc(response.profile)
    when = response.update_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = [f"SMTP profile (API {api}), etag {response.etag}, updated {when}"]
    for key, value in doc.items():
        if key == "RelayAuthenticationType":
            number = response.profile.relay_authentication_type
            value = f"{number} ({_AUTH_NAMES.get(number, 'unknown')})"
        elif isinstance(value, bool):
            value = "true" if value else "false"
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


def detect_api(payload: dict[str, Any]) -> str:
    credentials = [payload.get(k) for k in ("RelayUsername", "RelayPassword")]
    if any(isinstance(c, str) for c in credentials):
        return "v1"
    return "v2"


def _payload_profile(args: argparse.Namespace):
    """The profile message a Keyfactor JSON file states, for the API version it is in, and the
    etag of the revision it was read from (`get --json` writes one), if it names one."""
    payload = read_payload(args.file)
    for key, why in _IGNORED_KEYS.items():
        if payload.pop(key, None) is not None:
            print(f"smtpconfig: ignoring {key} ({why})", file=sys.stderr)
    etag = payload.pop("etag", "")
    payload.pop("updateTime", None)
    if not isinstance(etag, str):
        raise CliError(f"{args.file}: etag must be a string, as `get --json` writes it", EXIT_BAD_INPUT)
    api = detect_api(payload) if args.api == "auto" else args.api
    _check_version(payload, api, args.file)
    module = v1 if api == "v1" else v2
    profile = module.SmtpProfile()
    try:
        json_format.ParseDict(payload, profile)
    except json_format.ParseError as error:
        raise CliError(f"{args.file} does not fit the API {api} profile: {error}", EXIT_BAD_INPUT) from None
    return api, profile, etag


def _check_version(payload: dict[str, Any], api: str, file: str) -> None:
    """Say which API a payload is written for when it was sent to the other one: protobuf's own
    complaint about a string in a message field names neither the field nor the fix."""
    if api == "v1" and _V2_ONLY_KEYS & payload.keys():
        names = ", ".join(sorted(_V2_ONLY_KEYS & payload.keys()))
        raise CliError(f"{file}: {names} exist only in API v2; use --api v2 with secret objects", EXIT_BAD_INPUT)
    for key in ("RelayUsername", "RelayPassword"):
        value = payload.get(key)
        if api == "v2" and isinstance(value, str):
            raise CliError(
                f"{file} is an API v1 payload ({key} is a plain string) sent to API v2, which takes a secret"
                f' object such as {{"{key}": {{"SecretValue": "..."}}}}: use --api v1 (or auto, the default),'
                " or write the credentials as secret objects", EXIT_BAD_INPUT,
            )
        if api == "v1" and isinstance(value, dict):
            raise CliError(
                f"{file} is an API v2 payload ({key} is a secret object) sent to API v1, which takes plain"
                " strings: use --api v2 (or auto, the default)", EXIT_BAD_INPUT,
            )


_STEP_MARK = {v2.STEP_OUTCOME_OK: "ok", v2.STEP_OUTCOME_FAILED: "FAILED", v2.STEP_OUTCOME_SKIPPED: "skipped"}


def _test(args: argparse.Namespace) -> int:
    if args.file:
        api, profile, _ = _payload_profile(args)
        if api == "v1":
            return _test_v1(args, profile)
        request = v2.TestSmtpRequest(profile=profile, test_recipient=args.to)
    else:
        request = v2.TestSmtpRequest(test_recipient=args.to)
    response = call(args, v2_grpc.ConfigServiceStub, "TestSmtp", request)
    if args.json:
        print(cli_json.dumps(cli_json.message_doc(response)))
    else:
        for step in response.steps:
            millis = step.duration.ToMilliseconds()
            code = f" [{step.smtp_code}]" if step.smtp_code else ""
            print(f"{step.name:<8} {_STEP_MARK.get(step.outcome, '?'):<8} {millis:>6} ms{code}  {step.message}")
            if step.hint:
                print(f"{'':17}hint: {step.hint}")
        print("test message sent" if response.success else "test failed")
    return 0 if response.success else EXIT_FAILED


def _test_v1(args: argparse.Namespace, profile) -> int:
    """A v1 file goes through v1's TestSmtp, Keyfactor's contract: the profile back on success, a
    status naming the failed step otherwise (the step report is v2's)."""
    request = v1.TestSmtpRequest(profile=profile, test_recipient=args.to)
    response = call(args, v1_grpc.ConfigServiceStub, "TestSmtp", request)
    if args.json:
        doc = cli_json.message_doc(response)
        doc["profile"].pop("RelayPassword", None)  # never returned; an empty string would read as a value
        print(cli_json.dumps(doc))
    else:
        print("test message sent (API v1 reports no steps; write the file for v2 to see them)")
    return 0


def _resolve(args: argparse.Namespace) -> int:
    response = call(args, v2_grpc.ConfigServiceStub, "ResolveSmtp", v2.ResolveSmtpRequest(refresh=args.refresh))
    if response.HasField("credentials") and (response.credentials.password or response.credentials.access_token):
        print("smtpconfig: warning: the output contains credentials; keep it out of logs and terminals others see",
              file=sys.stderr)
    if args.json:
        print(cli_json.dumps(cli_json.message_doc(response)))
        return 0
    creds = response.credentials
    print(f"{response.profile.host}:{response.profile.port} (etag {response.etag}), cache for {response.cache_for.seconds} s")
    if creds.username:
        print(f"username: {creds.username}\npassword: {creds.password}")
    if creds.access_token:
        print(f"token type: {creds.token_type}\naccess token: {creds.access_token}")
        print(f"expires: {creds.token_expire_time.ToDatetime().isoformat()}Z")
    return 0


def _put(args: argparse.Namespace) -> int:
    api, profile, etag = _payload_profile(args)
    if api == "v1" and not args.mask and profile.relay_authentication_type == 2 and not profile.relay_password:
        # v1 reads never return the password and v1 has no marker that keeps it (v2's HasValue).
        raise CliError(
            f"{args.file}: RelayPassword is missing, and an API v1 replace needs it: add it, or read and"
            " write through v2 (`get --json`, then `put -f`), which keeps the stored one", EXIT_BAD_INPUT,
        )
    module, stub_class = (v1, v1_grpc.ConfigServiceStub) if api == "v1" else (v2, v2_grpc.ConfigServiceStub)
    # --if-match wins over the file's own etag; a file without one replaces whatever is stored.
    request = module.UpdateSmtpRequest(profile=profile, etag=args.if_match or etag)
    if args.mask:
        request.update_mask.paths.extend(p.strip() for p in args.mask.split(",") if p.strip())
    response = call(args, stub_class, "UpdateSmtp", request)
    print(f"stored; etag {response.etag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
