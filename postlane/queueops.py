"""The ops queue for tools, without a Faust worker.

- ``list_queue``: every mail's latest MessageStatusChanged (the status
  topic, read from offset 0, last change per message_id wins), filtered by
  state / server, acknowledged failures hidden unless asked, oldest first.
  Subjects come from the mails' SendRequested (the status topic does not
  carry them), read only while some listed mail still lacks one.
- ``issue``: publish one QueueCommandIssued per message on the commands
  topic (keyed by message_id; its event_id is the command id) and wait for
  each answer (QueueCommandApplied / QueueCommandRefused with that
  command_id) on command-results. The answering processor is whichever
  owns the mail's state: the limiter (mail it holds), delivery (mail it was
  given), or status (``ack``).
"""

from __future__ import annotations

import getpass
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from schemas import (
    Event,
    InvalidEvent,
    MessageStatusChanged,
    QueueCommandApplied,
    QueueCommandIssued,
    QueueCommandRefused,
    decode,
    decode_any,
)
from schemas.queue import COMMANDS as COMMAND_NAMES
from streams.client import BrokerUnavailable, ensure_topics, publish, read_topic, unavailable
from streams.offsets import true_end_offsets_sync
from streams.settings import Settings
from streams.topics import (
    COMMAND_RESULTS,
    COMMANDS,
    SEND_REQUESTED,
    SEND_REQUESTED_MASS,
    STATUS,
)

from .statusview import partition_for

# states listed when no --state is given: mail still on its way, and failures
OPEN_STATES = ("queued", "sending", "deferred", "failed")
# who answers each command, for the words of a missing answer
OWNERS = {"retry": "limiter/delivery", "send_now": "limiter/delivery",
          "cancel": "limiter/delivery", "ack": "status"}
ANSWERS: dict[str, type[Event]] = {
    cls.__name__: cls for cls in (QueueCommandApplied, QueueCommandRefused)
}


def operator() -> str:
    """``user@host``: who issues the command."""
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name: still a usable command
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


# --- the queue ----------------------------------------------------------------------------------


@dataclass
class QueuedMail:
    """One mail as the status topic has it now."""

    message_id: str
    state: str
    reason: str = ""
    server: str = ""
    attempt: int = 0
    updated_at: float = 0.0
    acknowledged: bool = False
    subject: str = ""
    recipients: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id, "state": self.state, "reason": self.reason,
            "server": self.server, "attempt": self.attempt, "updated_at": self.updated_at,
            "acknowledged": self.acknowledged, "subject": self.subject,
            "recipients": self.recipients,
        }


def latest(changes: Iterable[MessageStatusChanged]) -> dict[str, QueuedMail]:
    """message_id -> its latest change (the projection writes each mail's
    changes in order on one partition, so the last one read is the latest)."""
    out: dict[str, QueuedMail] = {}
    for c in changes:
        out[c.message_id] = QueuedMail(
            message_id=c.message_id, state=c.state, reason=c.reason, server=c.server,
            attempt=c.attempt, updated_at=c.occurred_at, acknowledged=c.acknowledged,
            recipients=c.recipients,
        )
    return out


def select(
    mails: Iterable[QueuedMail], states: Iterable[str] = (), server: str = "",
    show_all: bool = False, limit: int = 0,
) -> list[QueuedMail]:
    """The mails a listing shows, oldest update first (newest last).
    ``states``: only these (none given: ``OPEN_STATES``, or every state
    with ``show_all``). Acknowledged failures only with ``show_all``.
    ``limit``: the newest ``limit`` (0: no limit)."""
    wanted = set(states) or (None if show_all else set(OPEN_STATES))
    out = [
        m for m in mails
        if (wanted is None or m.state in wanted)
        and (not server or m.server == server)
        and (show_all or not (m.state == "failed" and m.acknowledged))
    ]
    out.sort(key=lambda m: (m.updated_at, m.message_id))
    return out[-limit:] if limit > 0 else out


def read_changes(s: Settings, idle: float = 0.5) -> list[MessageStatusChanged]:
    """Every MessageStatusChanged on the status topic, in partition order."""
    out: list[MessageStatusChanged] = []
    for rec in read_topic(s, STATUS.full(s), idle=idle):
        try:
            out.append(decode(MessageStatusChanged, rec.value))
        except InvalidEvent:
            continue  # not ours to judge: the projection writes valid events
    return out


def fill_subjects(s: Settings, mails: list[QueuedMail], idle: float = 0.5) -> None:
    """Set each mail's subject from its SendRequested (both lanes); stops
    reading as soon as every mail has one."""
    missing = {m.message_id.encode(): m for m in mails if not m.subject}
    for spec in (SEND_REQUESTED, SEND_REQUESTED_MASS):
        if not missing:
            return
        for rec in read_topic(s, spec.full(s), idle=idle):
            mail = missing.get(rec.key or b"")
            if mail is None or rec.value is None:
                continue
            try:
                subject = orjson.loads(rec.value).get("subject")
            except (orjson.JSONDecodeError, AttributeError):
                continue
            if isinstance(subject, str):
                mail.subject = subject
                del missing[rec.key or b""]
                if not missing:
                    break


def list_queue(
    s: Settings, states: Iterable[str] = (), server: str = "", show_all: bool = False,
    limit: int = 0, subjects: bool = True,
) -> list[QueuedMail]:
    """The queue as ``postlane queue`` shows it (see ``select``)."""
    shown = select(latest(read_changes(s)).values(), states, server, show_all, limit)
    if subjects and shown:
        fill_subjects(s, shown)
    return shown


# --- commands -----------------------------------------------------------------------------------


@dataclass
class Answer:
    """The answer to one command: ``applied`` or ``refused`` by ``by``, or
    ``timeout`` (none within the wait)."""

    message_id: str
    command: str
    command_id: str
    outcome: str  # applied | refused | timeout
    by: str = ""
    text: str = ""  # the detail (applied) or the reason (refused)

    @property
    def ok(self) -> bool:
        return self.outcome == "applied"

    def line(self, timeout: float) -> str:
        """``m-1: cancel applied (limiter): cancelled while deferred``."""
        what = self.command.replace("_", "-")
        if self.outcome == "timeout":
            owner = OWNERS.get(self.command, "limiter/delivery/status")
            return (f"{self.message_id}: no answer within {timeout:g} s: is the {owner} "
                    "worker running?")
        head = f"{self.message_id}: {what} {self.outcome} ({self.by})"
        return f"{head}: {self.text}" if self.text else head

    def to_dict(self) -> dict[str, Any]:
        return {"message_id": self.message_id, "command": self.command,
                "command_id": self.command_id, "outcome": self.outcome, "by": self.by,
                "text": self.text}


def commands_for(command: str, message_ids: Iterable[str], who: str,
                 note: str = "") -> list[QueueCommandIssued]:
    """One QueueCommandIssued per distinct message id (order kept)."""
    if command not in COMMAND_NAMES:
        raise ValueError(f"command {command!r} must be one of {', '.join(COMMAND_NAMES)}")
    ids = list(dict.fromkeys(m.strip() for m in message_ids))
    if not ids or "" in ids:
        raise ValueError("give at least one message id, none empty")
    return [QueueCommandIssued(message_id=m, command=command, operator=who, note=note)
            for m in ids]


def answer_of(ev: Event) -> Answer | None:
    if isinstance(ev, QueueCommandApplied):
        return Answer(ev.message_id, ev.command, ev.command_id, "applied", ev.by, ev.detail)
    if isinstance(ev, QueueCommandRefused):
        return Answer(ev.message_id, ev.command, ev.command_id, "refused", ev.by, ev.reason)
    return None


class AnswerReader:
    """Follows the command-results partitions of some message ids from
    their current end (opened before the commands are published, so no
    answer is missed and the topic's history is not read)."""

    def __init__(self, s: Settings, message_ids: Iterable[str]) -> None:
        topic = COMMAND_RESULTS.full(s)
        try:
            self.consumer = KafkaConsumer(
                bootstrap_servers=s.bootstrap, group_id=None, enable_auto_commit=False,
                client_id="postlane-queue-ops", fetch_max_wait_ms=100,
                request_timeout_ms=15000,
            )
            parts = self.consumer.partitions_for_topic(topic) or set()
        except KafkaError as exc:
            raise unavailable(s, exc) from exc
        if not parts:
            self.consumer.close()
            raise BrokerUnavailable(f"the topic {topic} does not exist: run `postlane dev` "
                                    "or `postlane worker ...` once to create the topics")
        wanted = {partition_for(m.encode(), parts) for m in message_ids}
        self.tps = [TopicPartition(topic, p) for p in sorted(wanted)]
        self.consumer.assign(self.tps)
        # the true end: the embedded broker's seek_to_end answer stops at the
        # start of the last batch + 1 (answers already there would be read)
        for tp, end in true_end_offsets_sync(self.consumer, self.tps).items():
            self.consumer.seek(tp, end)
        for tp in self.tps:
            self.consumer.position(tp)  # resolve the end now, before anything is published

    def poll(self, timeout: float) -> list[Answer]:
        out: list[Answer] = []
        batch = self.consumer.poll(timeout_ms=int(timeout * 1000), max_records=2000)
        for records in batch.values():
            for r in records:
                try:
                    answer = answer_of(decode_any(ANSWERS, r.value))
                except InvalidEvent:
                    continue  # MessageCancelled, or not ours to judge
                if answer is not None:
                    out.append(answer)
        return out

    def close(self) -> None:
        self.consumer.close()

    def __enter__(self) -> AnswerReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def issue(
    s: Settings, command: str, message_ids: Iterable[str], who: str | None = None,
    note: str = "", timeout: float = 30.0,
) -> list[Answer]:
    """Publish the command for each mail and wait up to ``timeout`` seconds
    for every answer; one Answer per mail, in the order given (``timeout``
    for those without one)."""
    issued = commands_for(command, message_ids, who if who is not None else operator(), note)
    ensure_topics(s, (COMMANDS, COMMAND_RESULTS))
    pending = {c.event_id: c for c in issued}
    answers: dict[str, Answer] = {}
    with AnswerReader(s, [c.message_id for c in issued]) as reader:
        publish(s, COMMANDS, [(c.message_id, c) for c in issued])
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for answer in reader.poll(min(0.5, max(deadline - time.monotonic(), 0.01))):
                if answer.command_id in pending:
                    answers[answer.command_id] = answer
                    del pending[answer.command_id]
    return [
        answers.get(c.event_id) or Answer(c.message_id, c.command, c.event_id, "timeout")
        for c in issued
    ]
