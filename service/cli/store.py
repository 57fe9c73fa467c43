"""`smtpconfig store copy`: move a deployment's state from one store to the other (SQLite to etcd
when a single server becomes a cluster, or back), offline.

It reads the same settings as `serve` (config file, environment, flags): the SQLite store is the
one in `data_dir`, the etcd store the one `etcd_*` name. Values are copied as they are stored,
sealed: the key never changes, and both stores are claimed for it first, so a key that does not fit
the source is refused before anything is written. The destination must hold nothing yet. The
SQLite store is opened with its lock, so a server still running on it makes the copy refuse.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from dataclasses import replace
from pathlib import Path

from smtpconfig import settings as settings_mod
from smtpconfig.cli.client import EXIT_FAILED, CliError
from smtpconfig.core.errors import SmtpConfigError
from smtpconfig.domain.crypto import Sealer, load_key
from smtpconfig.store.base import ABSENT, Store

_STORES = ("sqlite", "etcd")
_AUDIT_PAGE = 500


def add_commands(sub) -> None:
    store = sub.add_parser("store", help="work on the server's store while no server uses it")
    verbs = store.add_subparsers(dest="verb", required=True, metavar="VERB")
    copy = verbs.add_parser(
        "copy", help="copy everything from one store to the other (e.g. SQLite to etcd)",
        description="Copy the profile, the provider instances and the change records from one store to"
        " the other, as stored (sealed with the same key). Settings as for `serve`: the SQLite store in"
        " DATA_DIR, the etcd store named by the etcd_* settings. The destination must be empty.",
    )
    copy.add_argument("--from", dest="source", choices=_STORES, default="sqlite", help="copy from (default sqlite)")
    copy.add_argument("--to", dest="target", choices=_STORES, default="etcd", help="copy to (default etcd)")
    copy.add_argument("--config", type=Path, help="TOML settings file (env: SMTPCONFIG_CONFIG)")
    for name, flag in settings_mod.FLAGS.items():
        if name in ("data_dir", "key_file", "etcd_endpoints"):
            copy.add_argument(flag.name, dest=name, help=flag.help, **flag.options)
    copy.set_defaults(run=_copy)


def _copy(args: argparse.Namespace) -> int:
    if args.source == args.target:
        raise CliError("--from and --to name the same store", EXIT_FAILED)
    flags = {name: getattr(args, name, None) for name in ("data_dir", "key_file", "etcd_endpoints")}
    settings = settings_mod.load(flags=flags, config_file=args.config)
    try:
        keys, records = asyncio.run(copy_store(settings, args.source, args.target))
    except SmtpConfigError as error:
        raise CliError(str(error), EXIT_FAILED) from None
    print(f"copied {keys} keys and {records} change records from {args.source} to {args.target}")
    return 0


async def copy_store(settings: settings_mod.Settings, source_kind: str, target_kind: str) -> tuple[int, int]:
    """Copy everything from the `source_kind` store to the `target_kind` store; (keys, records)."""
    from smtpconfig.app import open_store  # the app layer builds stores from settings

    settings_mod.check(replace(settings, store="etcd"))  # one side is etcd: it must be named
    database = settings.data_dir / settings_mod.DATABASE_NAME
    if source_kind == "sqlite" and not database.exists():
        raise CliError(f"there is no SQLite store to copy from: {database} does not exist", EXIT_FAILED)
    key = load_key(env_value=os.environ.get("SMTPCONFIG_KEY"), key_file=settings.key_path, create=False)
    key_id = Sealer(key).key_id
    source: Store = await open_store(replace(settings, store=source_kind))
    try:
        await source.claim_key(key_id)  # the key must fit what is there
        target: Store = await open_store(replace(settings, store=target_kind))
        try:
            if await target.list(""):
                raise CliError(f"the {target_kind} store already holds data; copy into an empty one", EXIT_FAILED)
            await target.claim_key(key_id)
            revisions = await source.list("")
            for revision in revisions:
                await target.put(revision.key, revision.value, ABSENT)
            copied, after = 0, 0
            while True:
                page = await source.read_audit(after, None, _AUDIT_PAGE)
                if not page:
                    break
                await target.import_audit([(at, record) for _, at, record in page])
                copied += len(page)
                after = page[-1][0]
            return len(revisions), copied
        finally:
            await target.close()
    finally:
        await source.close()
