"""Notifications when jobs finish or fail: Prefect automations with notification blocks.

`jobcloud deploy` installs them from `JOBCLOUD_NOTIFY_*` / `JOBCLOUD_SMTP_*` settings
(docs/notifications.md): a webhook (Prefect's `CustomWebhookNotificationBlock`, a JSON POST)
and/or email (`JobCloudEmail`, Apprise over SMTP), and up to two automations:
`jobcloud-notify-finished` (a JobCloud flow run reached Completed) and `jobcloud-notify-error`
(Failed, TimedOut or Crashed). The Prefect server's triggers and actions services send them;
nothing of a job waits for a notification, and a receiver that hangs or refuses costs the
server's actions service at most the block's timeout.

The message names the job, its application, version and entrypoint (the flow run's `app:`,
`version:` and `entrypoint:` tags), its state and message, where its outputs are (the job store
and `jobs/<id>/`) and the run's page in the UI.
"""

from __future__ import annotations

import smtplib
import ssl
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from jobcloud.blocks.errors import UserError
from jobcloud.blocks.settings import JobCloudSettings, env_name, get_settings
from jobcloud.flows.callbacks import CallbackURLError, check_http_url

# Prefect is imported inside the functions: never before `ensure_api` has fixed the API.

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

WEBHOOK_BLOCK = "jobcloud-notify-webhook"
EMAIL_BLOCK = "jobcloud-notify-email"
AUTOMATIONS = {"finished": "jobcloud-notify-finished", "error": "jobcloud-notify-error"}
# Flow-run state events (named by state *name*: TimedOut is JobCloud's Failed-type name).
STATE_EVENTS = {
    "finished": ["prefect.flow-run.Completed"],
    "error": ["prefect.flow-run.Failed", "prefect.flow-run.TimedOut", "prefect.flow-run.Crashed"],
}
# A webhook that hangs holds the server's action this long at most.
WEBHOOK_TIMEOUT_S = 5.0
# `jobcloud deploy` checks that the SMTP server answers within this time.
SMTP_PROBE_TIMEOUT_S = 5.0


# Where notifications go: the `JOBCLOUD_NOTIFY_*` and `JOBCLOUD_SMTP_*` fields of JobCloud's
# settings (jobcloud.blocks.settings); none set: none sent.
NotifySettings = JobCloudSettings


def recipients(settings: NotifySettings) -> list[str]:
    """The email recipients, in order."""
    return [a.strip() for a in (settings.notify_email_to or "").split(",") if a.strip()]


def kinds(settings: NotifySettings) -> list[str]:
    """The ends that notify: `finished` and/or `error`."""
    return [k.strip() for k in settings.notify_on.split(",") if k.strip()]


class NotifyChange(BaseModel):
    """What `sync_notifications` did to one block or automation (as `DeployChange` shows it)."""

    name: str
    action: str  # created | updated | unchanged | deleted | warning
    detail: str = ""


def notify_settings() -> NotifySettings:
    """The settings, checked: raise `UserError` on a bad value (nothing is written then)."""
    settings = get_settings()
    unknown = sorted(set(kinds(settings)) - set(AUTOMATIONS))
    if unknown:
        raise UserError(f"{env_name('notify_on')}: unknown {', '.join(unknown)} (use finished, error or both)")
    if settings.notify_webhook_url:
        try:
            check_http_url(settings.notify_webhook_url, env_name("notify_webhook_url"))
        except CallbackURLError as exc:
            raise UserError(str(exc)) from None
    if recipients(settings) and not settings.smtp_host:
        raise UserError("JOBCLOUD_NOTIFY_EMAIL_TO is set but JOBCLOUD_SMTP_HOST is not: email needs an SMTP server")
    for address in [*recipients(settings), settings.notify_email_from]:
        if "@" not in address:
            raise UserError(f"notification email address {address!r} has no '@'")
    return settings


def smtp_port(settings: NotifySettings) -> int:
    """The SMTP port: the one set, else the usual one for the security chosen."""
    return settings.smtp_port or {"starttls": 587, "ssl": 465, "none": 25}[settings.smtp_security]


def probe_smtp(settings: NotifySettings, timeout_s: float = SMTP_PROBE_TIMEOUT_S) -> str | None:
    """None if the SMTP server answers (greeting, EHLO, STARTTLS and login as configured) within
    ``timeout_s``; else what went wrong, for a warning of `jobcloud deploy`. Sends no mail."""
    host, port = settings.smtp_host or "", smtp_port(settings)
    try:
        context = ssl.create_default_context()
        if settings.smtp_security == "ssl":
            server: smtplib.SMTP = smtplib.SMTP_SSL(host, port, timeout=timeout_s, context=context)
        else:
            server = smtplib.SMTP(host, port, timeout=timeout_s)
        try:
            server.ehlo()
            if settings.smtp_security == "starttls":
                server.starttls(context=context)
                server.ehlo()
            if settings.smtp_username:
                password = settings.smtp_password.get_secret_value() if settings.smtp_password else ""
                server.login(settings.smtp_username, password)
        finally:
            try:
                server.quit()
            except (smtplib.SMTPException, OSError):
                server.close()
    except (smtplib.SMTPException, OSError) as exc:  # timeouts and TLS errors are OSErrors
        return f"SMTP server {host}:{port} ({settings.smtp_security}): {type(exc).__name__}: {exc}"
    return None


def _tag(prefix: str) -> str:
    # The value of the flow run's `<prefix>:` tag (app, version, entrypoint), in Jinja.
    n = len(prefix) + 1
    return f'{{% for t in flow_run.tags %}}{{% if t[:{n}] == "{prefix}:" %}}{{{{ t[{n}:] }}}}{{% endif %}}{{% endfor %}}'


SUBJECT = "JobCloud job {{ flow_run.name }}: {{ flow_run.state.name }}"


def text_body(kind: str, store: str) -> str:
    """The notification text (a Jinja template the Prefect server renders) for ``kind``."""
    said = "finished" if kind == "finished" else "ended in error"
    return (
        f"JobCloud job {{{{ flow_run.id }}}} {said}.\n"
        f"application: {_tag('app')}\n"
        f"version: {_tag('version')}\n"
        f"entrypoint: {_tag('entrypoint')}\n"
        "state: {{ flow_run.state.name }}{% if flow_run.state.message %} - {{ flow_run.state.message }}{% endif %}\n"
        f"outputs: jobs/{{{{ flow_run.id }}}}/ in the job store {_literal(store)}\n"
        "download: jobcloud jobs outputs {{ flow_run.id }} DIR\n"
        "run: {{ flow_run|ui_url }}\n"
    )


def json_body(kind: str, store: str) -> str:
    """The webhook's JSON document (a Jinja template the Prefect server renders)."""
    fields = {
        "event": f'"jobcloud.job.{kind}"',
        "job_id": '"{{ flow_run.id }}"',
        "name": "{{ flow_run.name|tojson }}",
        "application": f'"{_tag("app")}"',
        "version": f'"{_tag("version")}"',
        "entrypoint": f'"{_tag("entrypoint")}"',
        "state": "{{ flow_run.state.name|tojson }}",
        "message": "{{ flow_run.state.message|tojson }}",
        "outputs": '"jobs/{{ flow_run.id }}/"',
        "store": _json_text(store),
        "ui_url": "{{ (flow_run|ui_url)|tojson }}",
        "text": "{{ text|tojson }}",
    }
    members = ", ".join(f'"{k}": {v}' for k, v in fields.items())
    # The text version once, in a variable, so the JSON carries it as one string too.
    return "{% set text %}" + text_body(kind, store) + "{% endset %}{" + members + "}"


def _literal(value: str) -> str:
    # Jinja would read "{{" inside a store URL as a template: keep it literal.
    return "{% raw %}" + value + "{% endraw %}"


def _json_text(value: str) -> str:
    import json

    return _literal(json.dumps(value))


def _blocks(client: SyncPrefectClient, settings: NotifySettings) -> tuple[dict[str, Any], list[NotifyChange]]:
    """Save the blocks the settings ask for; returns channel -> block document id, and changes."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    from jobcloud.deployments.notify.email_block import JobCloudEmail

    ids: dict[str, Any] = {}
    changes: list[NotifyChange] = []
    wanted: dict[str, Any] = {}
    if settings.notify_webhook_url:
        wanted["webhook"] = (
            WEBHOOK_BLOCK,
            CustomWebhookNotificationBlock(
                name="JobCloud",
                url=settings.notify_webhook_url.strip(),
                method="POST",
                # The body is the JSON document the automation renders (json_body).
                form_data="{{body}}",
                headers={"Content-Type": "application/json"},
                timeout=WEBHOOK_TIMEOUT_S,
            ),
        )
    if recipients(settings):
        wanted["email"] = (
            EMAIL_BLOCK,
            JobCloudEmail(
                smtp_host=settings.smtp_host or "",
                smtp_port=smtp_port(settings),
                security=settings.smtp_security,
                username=settings.smtp_username,
                password=settings.smtp_password,
                from_address=settings.notify_email_from,
                to=recipients(settings),
            ),
        )
    for channel, (name, block) in wanted.items():
        before = _block_data(client, block, name)
        ids[channel] = block.save(name, overwrite=True)
        after = _block_data(client, block, name)
        action = "created" if before is None else "unchanged" if before == after else "updated"
        changes.append(NotifyChange(name=f"block {name}", action=action, detail=channel))
    return ids, changes


def _block_data(client: SyncPrefectClient, block: Any, name: str) -> dict[str, Any] | None:
    from prefect.exceptions import ObjectNotFound

    try:
        doc = client.read_block_document_by_name(name, block.get_block_type_slug(), include_secrets=True)
    except ObjectNotFound:
        return None
    return dict(doc.data)


def notify_automation(kind: str, block_ids: dict[str, Any], store: str) -> Any:
    """The automation that notifies every channel in ``block_ids`` when a JobCloud flow run
    ends ``kind`` (`finished` or `error`)."""
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    bodies = {"webhook": json_body(kind, store), "email": text_body(kind, store)}
    return AutomationCore(
        name=AUTOMATIONS[kind],
        description=(
            f"JobCloud: notifies ({', '.join(sorted(block_ids))}) when a job "
            + ("finishes (Completed)." if kind == "finished" else "ends in error (Failed, TimedOut, Crashed).")
            + " Managed by `jobcloud deploy` from JOBCLOUD_NOTIFY_* settings (docs/notifications.md)."
        ),
        trigger=EventTrigger(
            expect=set(STATE_EVENTS[kind]),
            match=ResourceSpecification({"prefect.resource.id": "prefect.flow-run.*"}),
            # Only JobCloud's jobs: their runs carry an `app:<application>` tag.
            match_related=ResourceSpecification({"prefect.resource.role": "tag", "prefect.resource.id": "prefect.tag.app:*"}),
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[
            SendNotification(block_document_id=block_id, subject=SUBJECT, body=bodies[channel])
            for channel, block_id in sorted(block_ids.items())
        ],
    )


def _managed(automation: Any) -> dict[str, Any]:
    return {
        "description": automation.description,
        "trigger": automation.trigger.model_dump(exclude={"id"}),
        "actions": [a.model_dump() for a in automation.actions],
    }


def _put(client: SyncPrefectClient, automation_id: Any, wanted: Any, enabled: bool) -> None:
    # A full PUT (as automations.py does): update_automation drops the defaulted `type` fields.
    body = wanted.model_copy(update={"enabled": enabled}).model_dump(mode="json", exclude={"owner_resource"})
    response = client.request("PUT", "/automations/{id}", path_params={"id": automation_id}, json=body)
    response.raise_for_status()


def sync_notifications(client: SyncPrefectClient, settings: NotifySettings, store: str) -> list[NotifyChange]:
    """Make the notification blocks and automations match ``settings``: one line per block or
    automation (created, updated, unchanged, deleted, warning). Without any channel set, the
    automations are deleted (the blocks stay: they may be used elsewhere). An existing
    automation keeps its id and its enabled flag."""
    changes: list[NotifyChange] = []
    if recipients(settings):
        problem = probe_smtp(settings)
        if problem:
            changes.append(
                NotifyChange(
                    name=f"block {EMAIL_BLOCK}", action="warning", detail=f"{problem}; email notifications will fail until it answers"
                )
            )
    block_ids, block_changes = _blocks(client, settings)
    changes += block_changes
    for kind, name in AUTOMATIONS.items():
        existing = client.read_automations_by_name(name)
        if not block_ids or kind not in kinds(settings):
            for old in existing:
                client.delete_automation(old.id)
            if existing:
                changes.append(NotifyChange(name=f"automation {name}", action="deleted"))
            continue
        wanted = notify_automation(kind, block_ids, store)
        detail = f"on {kind}: {', '.join(sorted(block_ids))}"
        if not existing:
            client.create_automation(wanted)
            changes.append(NotifyChange(name=f"automation {name}", action="created", detail=detail))
            continue
        keep, *extra = existing
        for dup in extra:
            client.delete_automation(dup.id)
        if _managed(keep) == _managed(wanted):
            changes.append(NotifyChange(name=f"automation {name}", action="updated" if extra else "unchanged", detail=detail))
            continue
        _put(client, keep.id, wanted, keep.enabled)
        changes.append(NotifyChange(name=f"automation {name}", action="updated", detail=detail))
    return changes
