"""A small mailer (standard library: smtplib, EmailMessage) for the lab host: sign-up answers and enrollment links
go out from the lab, so the relay (inventory ``lab_smtp``) need only be reachable from there.

``lab_smtp``: ``{host, port (default 587 with starttls, else 25), from, starttls (default true), ssl (implicit TLS,
port 465; default false), username, password, timeout (seconds, default 20)}``.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Mapping, Optional

from metalab.rules import email_problem


class MailError(Exception):
    """The relay settings are unusable or the relay refused; the message never holds the password."""


@dataclass(frozen=True)
class Smtp:
    host: str
    port: int
    sender: str
    starttls: bool = True
    ssl: bool = False
    username: Optional[str] = None
    password: Optional[str] = None
    timeout: float = 20.0


def parse_smtp(data: Any) -> Smtp:
    if not isinstance(data, Mapping):
        raise MailError("lab_smtp: expected a mapping {host, port, from, starttls, username, password}")
    unknown = sorted(set(data) - {"host", "port", "from", "starttls", "ssl", "username", "password", "timeout"})
    if unknown:
        raise MailError(f"lab_smtp: unknown key(s) {', '.join(unknown)}")
    host = data.get("host")
    if not isinstance(host, str) or not host or any(c.isspace() for c in host):
        raise MailError("lab_smtp.host: expected the relay's host name or address")
    starttls, implicit = data.get("starttls", True), data.get("ssl", False)
    if not isinstance(starttls, bool) or not isinstance(implicit, bool):
        raise MailError("lab_smtp.starttls and lab_smtp.ssl: expected true or false")
    port = data.get("port") or (465 if implicit else 587 if starttls else 25)
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise MailError(f"lab_smtp.port: expected a port number, got {port!r}")
    sender = data.get("from")
    if email_problem(sender):
        raise MailError(f"lab_smtp.from: {email_problem(sender)}")
    username, password = data.get("username") or None, data.get("password") or None
    if (username is None) != (password is None):
        raise MailError("lab_smtp: give both username and password, or neither")
    timeout = data.get("timeout", 20)
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
        raise MailError("lab_smtp.timeout: expected seconds > 0")
    return Smtp(host, port, str(sender), starttls and not implicit, implicit, username, password, float(timeout))


def message(smtp: Smtp, to: str, subject: str, body: str) -> EmailMessage:
    problem = email_problem(to)
    if problem:
        raise MailError(problem)
    msg = EmailMessage()
    msg["From"] = smtp.sender
    msg["To"] = to
    msg["Subject"] = " ".join(subject.split())
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=smtp.sender.rpartition("@")[2])
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(body)
    return msg


def send(smtp: Smtp, to: str, subject: str, body: str) -> None:
    msg = message(smtp, to, subject, body)
    context = ssl.create_default_context()
    try:
        if smtp.ssl:
            client: smtplib.SMTP = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout, context=context)
        else:
            client = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout)
        with client:
            if smtp.starttls:
                client.starttls(context=context)
            if smtp.username and smtp.password:
                client.login(smtp.username, smtp.password)
            client.send_message(msg)
    except (smtplib.SMTPException, OSError, socket.timeout, ssl.SSLError) as exc:
        raise MailError(f"sending to {to} through {smtp.host}:{smtp.port} failed: {exc}") from None
