"""The test message from its template (`smtpconfig.outbound.message`) is byte for byte what
`smtplib.SMTP.send_message` flattens from a freshly built `EmailMessage`, and each call gets a Date
of its own time and a new Message-ID."""

from __future__ import annotations

import email
import email.policy
import io
from datetime import UTC, datetime
from email.generator import BytesGenerator
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import parsedate_to_datetime

import pytest

from smtpconfig.outbound import message

DATE = "Sun, 06 Dec 2026 17:57:21 +0000"

CASES = [
    pytest.param(("Relay", "relay@example.com", "ops@example.org", "smtp.example.com", 587, False), id="plain ASCII"),
    pytest.param(("", "relay@example.com", "ops@example.org", "localhost", 25, False), id="no display name"),
    pytest.param(("Équipe Relais ✉ 東京" * 3, "relay@example.com", "ops@example.org", "smtp.example.com", 587, False),
                 id="non-ASCII name, RFC 2047 over several folded lines"),
    pytest.param(('Ops, "night" shift (backup) ' * 3, "relay@" + "d" * 60 + ".example.com", "x" * 60 + "@example.org",
                  "h" * 70 + ".example.com", 465, False), id="specials and lines long enough to fold"),
    pytest.param(("Ünï", "relay@exämple.com", "öps@exämple.org", "smtp.example.com", 587, True),
                 id="SMTPUTF8: UTF-8 headers"),
]


def _fresh(name: str, sender: str, recipient: str, host: str, port: int, international: bool, message_id: str) -> bytes:
    """The message built and flattened as smtplib's send_message does it, every time anew."""
    built = EmailMessage()
    built["From"] = Address(display_name=name, addr_spec=sender)
    built["To"] = recipient
    built["Subject"] = message.SUBJECT
    built["Date"] = DATE
    built["Message-ID"] = message_id
    built.set_content(f"This message was sent by smtpconfig to test the SMTP relay {host}:{port}.\n")
    with io.BytesIO() as out:
        policy = built.policy.clone(utf8=True) if international else None
        BytesGenerator(out, policy=policy).flatten(built, linesep="\r\n")
        return out.getvalue()


@pytest.mark.parametrize("case", CASES)
def test_the_template_gives_the_bytes_of_a_fresh_build(case: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    name, sender, recipient, host, port, international = case
    message_id = f"<179657984112.12774.2853549684474633229@{sender.rpartition('@')[2]}>"
    monkeypatch.setattr(message, "format_datetime", lambda _: DATE)
    monkeypatch.setattr(message, "make_msgid", lambda domain: f"<179657984112.12774.2853549684474633229@{domain}>")
    for _ in range(2):  # the first call builds the template, the second takes it from the cache
        got = message.message_bytes(name, sender, recipient, host, port, international=international)
        assert got == _fresh(name, sender, recipient, host, port, international, message_id)


def test_each_message_has_its_own_date_and_message_id() -> None:
    args = ("Relay", "relay@example.com", "ops@example.org", "smtp.example.com", 587)
    before = datetime.now(UTC).replace(microsecond=0)
    first, second = (email.message_from_bytes(message.message_bytes(*args), policy=email.policy.default)
                     for _ in range(2))
    assert first["Message-ID"] != second["Message-ID"]
    assert first["Message-ID"].endswith("@example.com>")
    assert before <= parsedate_to_datetime(str(first["Date"])) <= datetime.now(UTC)
    assert str(first["From"]) == "Relay <relay@example.com>"
    assert first.get_content() == "This message was sent by smtpconfig to test the SMTP relay smtp.example.com:587.\r\n"
