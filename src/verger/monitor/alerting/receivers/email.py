"""Email over SMTP: one message per notification, the title as its subject.

Sent with the standard library's smtplib in a worker thread. On port 465
(or with ``tls: true``) the connection is TLS from the first byte; otherwise
STARTTLS is used when the server offers it, required with ``starttls: true``
and skipped with ``starttls: false``. Certificates are checked against the
system's CAs, or against ``ca_file`` for a private CA. A login happens only
with ``username``. The password is never logged.
"""

from __future__ import annotations

import asyncio
import smtplib
import socket
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from verger.config.alerting import Receiver as ReceiverConfig
from verger.monitor.alerting.notification import Notification
from verger.monitor.alerting.receivers.base import AlertReceiver, DeliveryFailed


class EmailReceiver(AlertReceiver):
    """Mails each notification of its groups to the ``to`` addresses."""

    kind = "smtp"

    def __init__(self, name: str, config: ReceiverConfig) -> None:
        super().__init__(name, config)
        assert config.smtp is not None
        host, _, port = config.smtp.rpartition(":")
        self.host = host.strip("[]")
        self.port = int(port)
        self.to = list(config.to)
        self.sender = config.sender or f"verger@{socket.gethostname()}"

    def describe(self) -> str:
        return f"smtp receiver {self.name} ({self.host}:{self.port})"

    async def send(self, notification: Notification) -> None:
        message = self.message(notification)
        await asyncio.to_thread(self._send, message)

    def message(self, notification: Notification) -> EmailMessage:
        message = EmailMessage()
        message["Subject"] = notification.title
        message["From"] = self.sender
        message["To"] = ", ".join(self.to)
        message["Date"] = formatdate(notification.at, usegmt=True)
        message["Message-ID"] = make_msgid(domain="verger")
        # Mail clients thread a group's messages under one they all refer to.
        message["X-Verger-Group"] = notification.dedup_key
        message["References"] = f"<{notification.dedup_key}@verger>"
        message["In-Reply-To"] = f"<{notification.dedup_key}@verger>"
        message.set_content(notification.text() + "\n")
        return message

    def _send(self, message: EmailMessage) -> None:
        context = self._context()
        try:
            with self._connect(context) as smtp:
                self._secure(smtp, context)
                if self.config.username:
                    smtp.login(self.config.username, self.config.password or "")
                smtp.send_message(message)
        except smtplib.SMTPResponseException as exc:
            text = (
                exc.smtp_error.decode(errors="replace")
                if isinstance(exc.smtp_error, bytes)
                else str(exc.smtp_error)
            )
            # 4xx answers are temporary; 5xx ones (a bad login, a refused address) are not.
            raise DeliveryFailed(
                f"SMTP {exc.smtp_code} {text}".strip(), retry=exc.smtp_code < 500
            ) from exc
        except ssl.SSLCertVerificationError as exc:
            # Trying again meets the same certificate; the config must change.
            raise DeliveryFailed(
                f"the certificate of {self.host}:{self.port} is not trusted: "
                f"{exc.verify_message}; set ca_file to the CA that signed it",
                retry=False,
            ) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}", retry=True) from exc

    def _context(self) -> ssl.SSLContext:
        """The TLS settings: the system's CAs, or only those in ``ca_file``."""
        ca_file = self.config.ca_file
        try:
            return ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise DeliveryFailed(
                f"cannot read ca_file {ca_file}: {getattr(exc, 'strerror', None) or exc}",
                retry=False,
            ) from exc

    def _connect(self, context: ssl.SSLContext) -> smtplib.SMTP:
        if self.config.implicit_tls:
            return smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout, context=context
            )
        return smtplib.SMTP(self.host, self.port, timeout=self.timeout)

    def _secure(self, smtp: smtplib.SMTP, context: ssl.SSLContext) -> None:
        wanted = self.config.starttls
        if wanted is False or self.config.implicit_tls:
            return
        smtp.ehlo()
        if smtp.has_extn("starttls"):
            smtp.starttls(context=context)
            smtp.ehlo()
        elif wanted:
            raise DeliveryFailed(
                f"{self.host}:{self.port} does not offer STARTTLS, which starttls: "
                "true requires",
                retry=False,
            )
