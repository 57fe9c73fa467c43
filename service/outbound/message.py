"""The message a TestSmtp sends, as the bytes `smtplib.SMTP.send_message` would put on the wire.

Building an `EmailMessage` (header parsing through `email.headerregistry`) and flattening it costs
about 0.4 ms, more than a round trip to a relay nearby. Only the Date and Message-ID headers change
from one test to the next, so the message is built and flattened once per sender, recipient and
relay, with marker values in those two headers, and each test folds its own two headers into that
template. A generator folds each header on its own (`Policy.fold_binary` of that header alone),
so the result is byte for byte what a fresh build would give.
"""

from __future__ import annotations

import functools
import io
from datetime import UTC, datetime
from email.generator import BytesGenerator
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import EmailPolicy, default
from email.utils import format_datetime, make_msgid

SUBJECT = "smtpconfig test message"
# Stand-ins while the template is flattened: short enough never to be folded, and a Date of the
# fixed length `format_datetime` always gives.
_DATE_MARK = "Thu, 01 Jan 1970 00:00:00 +0000"
_ID_MARK = "<template@smtpconfig.invalid>"


@functools.lru_cache(maxsize=32)
def _template(
    sender_name: str, sender_account: str, recipient: str, host: str, port: int, international: bool
) -> tuple[bytes, bytes, EmailPolicy[EmailMessage]]:
    """The flattened message split around its Date and Message-ID lines, and the policy that folds them."""
    message = EmailMessage()
    message["From"] = Address(display_name=sender_name, addr_spec=sender_account)
    message["To"] = recipient
    message["Subject"] = SUBJECT
    message["Date"] = _DATE_MARK
    message["Message-ID"] = _ID_MARK
    message.set_content(f"This message was sent by smtpconfig to test the SMTP relay {host}:{port}.\n")
    # What send_message flattens with: the message's policy (an EmailMessage's is email.policy.default)
    # with CRLF line ends, and UTF-8 headers for an SMTPUTF8 session.
    policy = default.clone(linesep="\r\n", utf8=international)
    with io.BytesIO() as out:
        BytesGenerator(out, policy=policy).flatten(message)
        flat = out.getvalue()
    marks = policy.fold_binary("Date", _DATE_MARK) + policy.fold_binary("Message-ID", _ID_MARK)
    head, found, tail = flat.partition(marks)
    if not found:  # the generator's output is not what this module assumes: fail loudly, not silently wrong
        raise AssertionError("the test message's Date and Message-ID lines were not found")
    return head, tail, policy


def message_bytes(
    sender_name: str, sender_account: str, recipient: str, host: str, port: int, *, international: bool = False
) -> bytes:
    """The test message with a Date of now and a new Message-ID, flattened with CRLF line ends
    (UTF-8 headers when `international`, as for an SMTPUTF8 session)."""
    head, tail, policy = _template(sender_name, sender_account, recipient, host, port, international)
    domain = sender_account.rpartition("@")[2] or None
    return b"".join((
        head,
        policy.fold_binary("Date", format_datetime(datetime.now(UTC))),
        policy.fold_binary("Message-ID", make_msgid(domain=domain)),
        tail,
    ))
