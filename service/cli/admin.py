"""Operator commands around callers: making bearer tokens, and reading the audit trail.

    smtpconfig token new --identity NAME [--permission P]... [--out FILE]
                                             a new token, shown once, and its settings lines
    smtpconfig token hash [FILE]             the sha256 a token's settings entry holds
    smtpconfig audit [--since 1h|TIME] [--json]
                                             change records and this replica's records, oldest first
    smtpconfig audit verify [--dir DIR]      check the hash chain of the replicas' audit logs (offline)
"""

from __future__ import annotations

import argparse
import os
import re
import stat
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from smtpconfig.api.auth import new_token, token_hash
from smtpconfig.cli import json as cli_json
from smtpconfig.cli.client import EXIT_BAD_INPUT, EXIT_FAILED, CliError, add_connection_args, call
from smtpconfig.core.permissions import ALL_PERMISSIONS, PERMISSIONS, is_plain_identity
from smtpconfig.ops.audit_verify import verify
from smtpconfig.settings import DEFAULT_DATA_DIR
from smtpconfig.v2 import audit_service_pb2 as pb
from smtpconfig.v2 import audit_service_pb2_grpc as pb_grpc

_AGO = re.compile(r"^(\d+)([smhd])\Z")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def add_commands(sub) -> None:
    token = sub.add_parser("token", help="make bearer tokens for callers")
    verbs = token.add_subparsers(dest="verb", required=True, metavar="VERB")
    new = verbs.add_parser(
        "new", help="print a new token and the [[tokens]] entry that admits it",
        description="Print a new bearer token, and on standard error the lines to append to the"
        " server's config file. Give --out FILE to have the token written to a new file of mode"
        " 0600; `> FILE` would create it with your umask's mode (0644 by default), so the CLI"
        " narrows a regular file on standard output to 0600 before writing.",
    )
    new.add_argument("--identity", required=True, help="the name the policy knows the caller by")
    new.add_argument(
        "--permission", action="append", choices=(*PERMISSIONS, ALL_PERMISSIONS), metavar="PERMISSION",
        help="a permission to grant it, repeatable (shown in the [policy] line to add); none by default:"
        " see the README's trust model table for what each one reaches",
    )
    new.add_argument("--out", metavar="FILE",
                     help="write the token to this new file, mode 0600, not to standard output")
    new.set_defaults(run=_token_new)
    hashed = verbs.add_parser("hash", help="print the sha256 of a token read from FILE or standard input")
    hashed.add_argument("file", nargs="?", default="-", help="file holding the token (default: standard input)")
    hashed.set_defaults(run=_token_hash)

    audit = sub.add_parser("audit", help="show the audit trail: changes, tests and resolutions")
    add_connection_args(audit)
    audit.add_argument(
        "--since", help="only records from this time on: an age such as 30m, 12h or 7d, or an"
        " ISO 8601 time such as 2026-11-25T10:00:00Z",
    )
    audit.add_argument("--json", action="store_true", help="print one JSON object per record")
    audit.set_defaults(run=_audit)
    verbs = audit.add_subparsers(dest="verb", required=False, metavar="VERB")
    check = verbs.add_parser(
        "verify", help="check the hash chain of every replica's audit log in a directory (offline)",
        description="Read every replica's audit log in DIR (rotated files, then the active one) and check"
        " that each line chains to the one before it. Prints the first broken link (file:line) and"
        " exits 1, or the number of records and exits 0.",
    )
    check.add_argument("--dir", help="the audit directory (default: DATA_DIR/audit, with DATA_DIR from"
                       " SMTPCONFIG_DATA_DIR or ./smtpconfig-data)")
    check.set_defaults(run=_audit_verify)


def _token_new(args: argparse.Namespace) -> int:
    if not is_plain_identity(args.identity):
        raise CliError("--identity must be a plain name (letters, digits, . _ @ -)", EXIT_BAD_INPUT)
    token = new_token()
    where = f"in {args.out!r}" if args.out else "on standard output"
    if args.out:
        _write_new_file(args.out, token)
    else:
        _narrow_stdout()
        print(token, flush=True)
    print(_token_entry(args.identity, token_hash(token), args.permission or [], where), file=sys.stderr)
    return 0


def _token_entry(identity: str, digest: str, permissions: list[str], where: str) -> str:
    """Lines that can be appended to any config file, one with a [policy] table included: a
    [[tokens]] table may repeat, but [policy] may not be opened twice, so its line is a comment
    to move into the file's own [policy] table."""
    granted = ", ".join(f'"{p}"' for p in dict.fromkeys(permissions))
    grant = (f"#   \"{identity}\" = [{granted}]" if permissions else
             f"#   \"{identity}\" = [...]   # the permissions it needs: see the README's trust model table")
    return (
        f"\n# Give the token {where} to the caller; it is shown only this once. Append these lines to\n"
        "# the server's config file, grant the identity its permissions in the file's [policy] table\n"
        "# (create it if there is none), and restart the server.\n"
        f"[[tokens]]\nidentity = \"{identity}\"\nsha256 = \"{digest}\"\n"
        f"# In [policy]:\n{grant}"
    )


def _write_new_file(path: str, token: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise CliError(f"{path} exists; remove it or choose another name (a token is never overwritten)",
                       EXIT_BAD_INPUT) from None
    except OSError as error:
        raise CliError(f"cannot create {path}: {error.strerror}", EXIT_BAD_INPUT) from None
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(token + "\n")


def _narrow_stdout() -> None:
    """`token new > FILE` makes FILE with the umask's mode before we run: take group and other
    permissions away from a regular file we own before the token goes in."""
    try:
        fd = sys.stdout.fileno()
        held = os.fstat(fd)
    except (OSError, ValueError, AttributeError):
        return  # not a real file (captured, closed): nothing to narrow
    if stat.S_ISREG(held.st_mode) and held.st_uid == os.geteuid() and held.st_mode & 0o077:
        os.fchmod(fd, stat.S_IMODE(held.st_mode) & 0o700)
        # A comment, so that all of standard error can still be appended to a config file.
        print(f"# smtpconfig: standard output is a file: made it mode {stat.S_IMODE(held.st_mode) & 0o700:04o}"
              " (--out FILE creates it so from the start)", file=sys.stderr)


def _token_hash(args: argparse.Namespace) -> int:
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
    except OSError as error:
        raise CliError(f"cannot read {args.file}: {error.strerror}", EXIT_BAD_INPUT) from None
    token = text.strip()
    if not token:
        raise CliError("no token given", EXIT_BAD_INPUT)
    print(token_hash(token))
    return 0


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`30m`, `12h`, `7d` (ago) or an ISO 8601 time (UTC when it names no zone)."""
    now = now or datetime.now(UTC)
    ago = _AGO.match(text)
    if ago:
        try:
            return now - timedelta(**{_UNITS[ago.group(2)]: int(ago.group(1))})
        except OverflowError:
            raise CliError(f"--since {text!r} reaches back before the year 1", EXIT_BAD_INPUT) from None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"--since {text!r} is neither an age (30m, 12h, 7d) nor an ISO 8601 time", EXIT_BAD_INPUT) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _audit(args: argparse.Namespace) -> int:
    request = pb.ListAuditRecordsRequest(page_size=1000)
    if args.since:
        request.since.FromDatetime(parse_since(args.since))
    shown = 0
    while True:
        page = call(args, pb_grpc.AuditServiceStub, "ListAuditRecords", request)
        shown += len(page.records)
        for record in page.records:
            if args.json:
                print(cli_json.dumps(cli_json.message_doc(record), one_line=True))
            else:
                print(_line(record))
        if not page.next_page_token:
            if not shown and not args.json:  # as `providers list` says so; JSON lines stay none
                print("no audit records" + (f" since {args.since}" if args.since else ""))
            return 0
        request.page_token = page.next_page_token


def _audit_verify(args: argparse.Namespace) -> int:
    data_dir = Path(os.environ.get("SMTPCONFIG_DATA_DIR") or DEFAULT_DATA_DIR)
    directory = Path(args.dir) if args.dir else data_dir / "audit"
    if not directory.is_dir():
        raise CliError(f"{directory} is not a directory holding audit logs", EXIT_BAD_INPUT)
    try:
        chains = verify(directory)
    except OSError as error:
        raise CliError(f"cannot read {error.filename or directory}: {error.strerror}") from None
    if not chains:
        raise CliError(f"no audit log in {directory}")
    broken = False
    for chain in chains:
        if chain.broken is not None:
            broken = True
            print(f"{chain.replica}: BROKEN at {chain.broken} (after {chain.records} good records)")
            continue
        notes = "".join(f"; {note}" for note in chain.notes)
        print(f"{chain.replica}: {chain.records} records in {chain.files} files, the chain is intact{notes}")
    return EXIT_FAILED if broken else 0


def _line(record: pb.AuditRecord) -> str:
    when = record.time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")
    what = ", ".join(record.fields)
    if record.provider:
        what = f"provider {record.provider}" + (f": {what}" if what else "")
    parts = [when, record.identity or "-", record.method, record.outcome]
    if what:
        parts.append(what)
    if record.message:
        parts.append(record.message)
    parts.append(f"[{record.request_id}]")
    return "  ".join(parts)
