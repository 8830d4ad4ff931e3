"""`JobCloudEmail`: a Prefect notification block that mails through any SMTP server.

Prefect 3.8 ships no SMTP notification block (SendgridEmail needs SendGrid's API; prefect-email
has credentials and a task, not a block an automation can notify with). This block is a thin
layer over Prefect's own Apprise notification machinery: the settings become an Apprise
`mailto://` URL, and Apprise does the SMTP work, with a bounded connect/read timeout.

The Prefect server loads it when an automation fires (it imports the `prefect.collections`
entry points of the environment: pyproject.toml names this module), so the server runs where
JobCloud is installed, as with JobCloud's worker type.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import quote, urlencode

from prefect.blocks.notifications import AbstractAppriseNotificationBlock
from pydantic import Field, SecretStr

# The SMTP conversation may take this long in all (connect and each answer): a server that
# hangs costs the server's actions service no more, and the job nothing at all.
DEFAULT_SMTP_TIMEOUT_S = 10.0


class JobCloudEmail(AbstractAppriseNotificationBlock):
    """Send a notification as an email through an SMTP server (STARTTLS, SSL or plain)."""

    _block_type_name = "JobCloud Email"
    _block_type_slug = "jobcloud-email"
    _description = "Email through an SMTP server, for JobCloud's job notifications (Apprise underneath)."

    smtp_host: str = Field(description="Host name of the SMTP server.")
    smtp_port: int | None = Field(default=None, description="Port; default 587 (starttls), 465 (ssl) or 25 (none).")
    security: Literal["starttls", "ssl", "none"] = Field(default="starttls", description="How the connection is secured.")
    username: str | None = Field(default=None, description="Login name, if the server wants one.")
    password: SecretStr | None = Field(default=None, description="Login password.")
    from_address: str = Field(description="Sender address.")
    to: list[str] = Field(description="Recipient addresses.")
    timeout_s: float = Field(default=DEFAULT_SMTP_TIMEOUT_S, description="Seconds the SMTP conversation may take.")

    def apprise_url(self) -> SecretStr:
        """The Apprise URL of these settings (secret: it holds the password)."""
        scheme = "mailto" if self.security == "none" else "mailtos"
        auth = ""
        if self.username:
            auth = quote(self.username, safe="")
            if self.password is not None:
                auth += ":" + quote(self.password.get_secret_value(), safe="")
            auth += "@"
        port = f":{self.smtp_port}" if self.smtp_port else ""
        query = {
            "smtp": self.smtp_host,
            "from": self.from_address,
            "to": ",".join(self.to),
            "cto": f"{self.timeout_s:g}",
            "rto": f"{self.timeout_s:g}",
            "format": "text",
        }
        if self.security != "none":
            query["mode"] = self.security
        return SecretStr(f"{scheme}://{auth}{self.smtp_host}{port}/?{urlencode(query)}")

    def block_initialization(self) -> None:
        self._start_apprise_client(self.apprise_url())
