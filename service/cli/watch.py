"""`smtpconfig watch [--json] [--after REV]`: print each WatchSmtp event as it arrives.

Human output is one line per event: when, what kind, the revision, the etag, and for a change the
fields that differ from the profile before it (with their values, secrets only as withheld or by
reference, as GetSmtp shows them). `--json` prints each event as one JSON object per line in the
CLI's JSON dialect.

A stream that ends UNAVAILABLE (the server stops, loses its store, or the stream reaches its age
limit) is opened again after the last revision printed, so nothing is missed or printed twice;
waits between attempts grow from half a second to 30 s, with jitter, and start over once a
message arrives. Any other error ends the command with its explanation. Ctrl-C ends it quietly.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import UTC, datetime
from typing import Any

import grpc

from smtpconfig.cli import json as cli_json
from smtpconfig.cli.client import EXIT_BAD_INPUT, CliError, add_connection_args, connection, failure
from smtpconfig.v2 import config_service_pb2 as v2
from smtpconfig.v2 import config_service_pb2_grpc as v2_grpc

Event = v2.WatchSmtpEvent
FIRST_WAIT = 0.5
LONGEST_WAIT = 30.0
_KINDS = {
    Event.KIND_SNAPSHOT: "SNAPSHOT", Event.KIND_CHANGE: "CHANGE",
    Event.KIND_RESYNC: "RESYNC", Event.KIND_PROGRESS: "PROGRESS",
}


def add_command(sub) -> None:
    watch = sub.add_parser("watch", help="print each change of the SMTP profile as it happens (WatchSmtp)")
    add_connection_args(watch)
    watch.add_argument("--json", action="store_true", help="print each event as one JSON object per line")
    watch.add_argument(
        "--after", type=int, default=0, metavar="REV",
        help="start after this revision (one a watch printed), showing only what changed since; default: a snapshot",
    )
    watch.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.after < 0:
        raise CliError("--after takes a revision a watch printed, 0 or more", EXIT_BAD_INPUT)
    printer = _Printer(args.json)
    after = args.after
    wait = FIRST_WAIT
    with connection(args) as (channel, metadata, target):
        stub = v2_grpc.ConfigServiceStub(channel)
        while True:
            stream = stub.WatchSmtp(v2.WatchSmtpRequest(after_revision=after), metadata=metadata)
            try:
                for event in stream:
                    printer.show(event)
                    after, wait = event.revision, FIRST_WAIT
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise failure(error, target, args) from None
                pause = wait * random.uniform(0.8, 1.2)
                print(f"smtpconfig: the stream ended ({error.details()}); resuming after revision {after}"
                      f" in {pause:.1f} s", file=sys.stderr, flush=True)
                time.sleep(pause)
                wait = min(wait * 2, LONGEST_WAIT)
            finally:
                stream.cancel()


class _Printer:
    """Prints events, remembering the profile before each so that a change can name what differs."""

    def __init__(self, as_json: bool) -> None:
        self._json = as_json
        self._before: dict[str, Any] | None = None

    def show(self, event: v2.WatchSmtpEvent) -> None:
        if self._json:
            print(cli_json.dumps(cli_json.message_doc(event), one_line=True), flush=True)
            return
        kind = _KINDS.get(event.kind, str(event.kind))
        if event.kind == Event.KIND_PROGRESS:
            when = datetime.now(UTC)
            print(f"{_time(when)}  {kind:<8} revision {event.revision}: no change", flush=True)
            return
        profile = _profile_doc(event) if event.HasField("profile") else None
        when = event.update_time.ToDatetime(tzinfo=UTC) if event.HasField("update_time") else datetime.now(UTC)
        head = f"{_time(when)}  {kind:<8} revision {event.revision} etag {event.etag or '-'}"
        if profile is None:
            print(f"{head}: no profile is stored", flush=True)
        elif event.kind == Event.KIND_CHANGE and self._before is not None:
            print(f"{head}: {_differences(self._before, profile) or 'no field changed'}", flush=True)
        else:
            print(f"{head}: {profile.get('Host') or '-'}:{profile.get('Port')}", flush=True)
        self._before = profile


def _profile_doc(event: v2.WatchSmtpEvent) -> dict[str, Any]:
    return cli_json.message_doc(event.profile)


def _time(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def _differences(before: dict[str, Any], after: dict[str, Any]) -> str:
    """`Port 587 -> 2525, RelayPassword`: scalar fields with their values, secret objects and
    lists by name only (their values are withheld, or too long for one line)."""
    changed = []
    for key in after:
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if isinstance(new, (dict, list)) or isinstance(old, (dict, list)):
            changed.append(key)
        else:
            changed.append(f"{key} {_scalar(old)} -> {_scalar(new)}")
    return ", ".join(changed)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "-" if value in ("", None) else str(value)
