"""What a job tells the world as it goes: Prefect events and its callback.

`JobReporter` is made once per job (`run_job`). Each phase emits the Prefect event
`jobcloud.job.<phase>` about the flow run (`prefect.flow-run.<id>`), with the application,
version and entrypoint as related resources so that automations can match them, and queues a
callback update when the job has a `callback_url`. The final state emits
`jobcloud.job.<state>` (completed, failed, timedout, cancelled) carrying where the outputs are.
Nothing here can fail or hold up a job: emitting is a queue put, the callback a bounded wait.
"""

from __future__ import annotations

import logging
from typing import Any

from jobcloud.flows.callbacks import FINAL_STATUS, PHASE_STATUS, CallbackSender, task_update
from jobcloud.flows.catalog import EntrypointRef
from jobcloud.flows.manifest import JobManifest, job_prefix

EVENT_PREFIX = "jobcloud.job."
# The phases a job reports, in order (`reused` instead of the container's two and the upload).
PHASES = ("inputs-staged", "reused", "container-started", "container-exited", "outputs-uploaded")
# Final events, one name per state: an automation's trigger matches event names, not payloads.
FINAL_EVENTS = {s: EVENT_PREFIX + s.lower() for s in ("Completed", "Failed", "TimedOut", "Cancelled")}


def related_resources(ref: EntrypointRef) -> list[dict[str, str]]:
    """The application, version and entrypoint of a job as Prefect related resources
    (`jobcloud.entrypoint.torchfit/v1/train`, role `entrypoint`), for automations to match."""
    app, version, entrypoint = ref.application, ref.version, ref.entrypoint
    return [
        {"prefect.resource.id": f"jobcloud.application.{app}", "prefect.resource.role": "application", "prefect.resource.name": app},
        {"prefect.resource.id": f"jobcloud.version.{app}/{version}", "prefect.resource.role": "version", "prefect.resource.name": version},
        {
            "prefect.resource.id": f"jobcloud.entrypoint.{app}/{version}/{entrypoint}",
            "prefect.resource.role": "entrypoint",
            "prefect.resource.name": entrypoint,
        },
    ]


def data_out(manifest: JobManifest) -> list[str]:
    """The job's output keys as the callback's `data_out`: every file it left, outputs first,
    then artifacts, then logs (each key once)."""
    order = {"output": 0, "artifact": 1, "log": 2}
    latest = {o.key: o for o in manifest.outputs}
    return [o.key for o in sorted(latest.values(), key=lambda o: order[o.kind])]


class JobReporter:
    """Reports one job's phases and final state as Prefect events and callback updates."""

    def __init__(
        self,
        ref: EntrypointRef,
        job_id: str,
        callback_url: str | None,
        logger: Any = None,
        run_id: str | None = None,
        phase_events: bool = True,
    ) -> None:
        self.ref = ref
        self.job_id = job_id
        # An array's element emits its final event only: its phases would be thousands of
        # events per array that no automation waits for (its callback still hears each phase).
        self.phase_events = phase_events
        # The flow run the events are about: an array's element is one part of its run.
        self.run_id = run_id or job_id
        self.logger = logger or logging.getLogger("jobcloud.job")
        self.sender = CallbackSender(callback_url, self._log) if callback_url else None
        self.emitted: list[str] = []

    def phase(self, name: str, **details: Any) -> None:
        """Emit `jobcloud.job.<name>` with ``details`` as payload; queue a callback update."""
        if self.phase_events:
            self._emit(EVENT_PREFIX + name, details)
        if self.sender is not None:
            self.sender.send(self._update(PHASE_STATUS.get(name, "processing"), name, details=details))

    def final(self, manifest: JobManifest) -> None:
        """Emit the final event and queue the final update (`data_out` = the output keys)."""
        keys = data_out(manifest)
        artifacts = [o for o in manifest.outputs if o.kind == "artifact"]
        payload = {
            "state": manifest.state,
            "exit_code": manifest.exit_code,
            "outputs": f"{manifest.prefix}/",
            # What a later job takes with `--artifact` (train -> predict chains).
            "artifact": f"{manifest.prefix}/artifact" if artifacts else None,
            "data_out": keys,
            "message": manifest.message.splitlines()[0] if manifest.message else None,
            "reused_from": manifest.reused_from,
        }
        self._emit(FINAL_EVENTS.get(manifest.state, EVENT_PREFIX + manifest.state.lower()), payload)
        if self.sender is not None:
            status = FINAL_STATUS.get(manifest.state, "error")
            details = {k: payload[k] for k in ("outputs", "exit_code", "message") if payload[k] is not None}
            self.sender.send(self._update(status, "final", details=details, data_out=keys, state=manifest.state))

    def close(self) -> None:
        """Wait (a bounded time) for the callback updates still queued."""
        if self.sender is not None:
            self.sender.close()

    def _update(self, status: str, phase: str, **fields: Any) -> dict[str, Any]:
        ref = self.ref
        return task_update(
            status,
            job_id=self.job_id,
            application=ref.application,
            version=ref.version,
            entrypoint=ref.entrypoint,
            phase=phase,
            **fields,
        )

    def _emit(self, event: str, payload: dict[str, Any]) -> None:
        from prefect.events import emit_event

        try:
            emit_event(
                event=event,
                resource={
                    "prefect.resource.id": f"prefect.flow-run.{self.run_id}",
                    "prefect.resource.name": f"{self.ref} {self.job_id[:8]}" if self.run_id == self.job_id else f"{self.ref} {self.job_id}",
                    "jobcloud.outputs": f"{job_prefix(self.job_id)}/",
                },
                related=related_resources(self.ref),
                payload={"job_id": self.job_id, **payload},
            )
            self.emitted.append(event)
        except Exception as exc:  # events are a report: never the job's failure
            self._log("warning", f"could not emit {event}: {exc}")

    def _log(self, level: str, message: str) -> None:
        try:
            getattr(self.logger, level)(message)
        except Exception:  # a logger whose run ended (the API went away) must not break a job
            pass
