"""`smtpconfig audit verify`: check the hash chain of every replica's audit log in a directory.

Offline: it reads the files only (a running server may go on appending meanwhile; the lines it reads
are whole or ignored as the one being written). For each replica, the rotated files oldest first and
then the active one must form one chain: every line a JSON record whose `seq` is one more than the
line before and whose `prev` is the sha256 of the line before. The first line of the oldest file
kept chains to 64 zeros, or to a record in a file already rotated away (`audit_keep_files`), which
is said, not counted as a break.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from smtpconfig.ops.audit_file import GENESIS, line_hash, log_files, replicas_in


@dataclass
class Broken:
    """The first link of a chain that does not hold: where, and what is wrong."""

    path: Path
    line: int
    problem: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.problem}"


@dataclass
class Chain:
    """What verify found for one replica."""

    replica: str
    records: int = 0
    files: int = 0
    first_seq: int = 0
    broken: Broken | None = None
    notes: list[str] = field(default_factory=list)


def verify_replica(directory: Path, replica: str) -> Chain:
    chain = Chain(replica)
    prev: str | None = None
    seq: int | None = None
    for path in log_files(directory, replica):
        chain.files += 1
        with open(path, "rb") as f:
            data = f.read()
        lines = data.split(b"\n")
        torn = lines.pop()  # b"" when the file ends in a newline
        for number, line in enumerate(lines, 1):
            problem = _check(line, prev, seq, chain)
            if problem:
                chain.broken = Broken(path, number, problem)
                return chain
            doc = json.loads(line)
            seq, prev = doc["seq"], line_hash(line)
            chain.records += 1
        if torn:
            chain.broken = Broken(path, len(lines) + 1, "the last line is cut off (a truncated file, or a crash during a write)")
            return chain
    return chain


def _check(line: bytes, prev: str | None, seq: int | None, chain: Chain) -> str:
    """What is wrong with `line` after a line hashing to `prev` with number `seq`, or ""."""
    try:
        doc = json.loads(line)
    except ValueError:
        return "not a JSON record (an edited or damaged line)"
    if not isinstance(doc, dict) or not isinstance(doc.get("seq"), int) or not isinstance(doc.get("prev"), str):
        return "not an audit record (no seq or prev)"
    if prev is None:  # the first line kept
        chain.first_seq = doc["seq"]
        if doc["prev"] != GENESIS:
            if doc["seq"] <= 1:
                return "the first record does not start the chain (its prev is not zeros)"
            chain.notes.append(f"the log starts at record {doc['seq']}: older files were rotated away")
        elif doc["seq"] != 1:
            return f"the first record is number {doc['seq']}, not 1"
        return ""
    if doc["prev"] != prev:
        return (f"record {doc['seq']} does not chain to the line before it (a line before it was"
                " deleted, edited or moved)")
    if doc["seq"] != (seq or 0) + 1:
        return f"record {doc['seq']} follows record {seq} (a record is missing or out of order)"
    return ""


def verify(directory: Path) -> list[Chain]:
    """The chains of every replica with a log in `directory`."""
    return [verify_replica(directory, replica) for replica in replicas_in(directory)]
