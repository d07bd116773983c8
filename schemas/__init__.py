"""Postlane's events. See schemas/base.py for the rules every event follows."""

from .base import Event, InvalidEvent, decode, decode_any, encode
from .config import (
    CONFIG_EVENTS,
    AliasConfigured,
    AliasRemoved,
    IncomingServerConfigured,
    IncomingServerRemoved,
    OutgoingServerConfigured,
    OutgoingServerRemoved,
    SettingsChanged,
)
from .deadletter import EventDeadLettered
from .delivery import DeliveryAttempted, DeliveryStarted, RetryTimeReached
from .inbound import (
    InboundAliasMatched,
    InboundMailReceived,
    InboundMailRejected,
    InboundMailRouted,
    InboundReplyLookupRequested,
    IncomingServerChecked,
    SentMessageRecorded,
)
from .routing import RoutingDecided
from .send import SendRequested
from .status import MessageStatusChanged

ALL_EVENTS: tuple[type[Event], ...] = (
    OutgoingServerConfigured,
    OutgoingServerRemoved,
    SettingsChanged,
    SendRequested,
    RoutingDecided,
    DeliveryStarted,
    DeliveryAttempted,
    RetryTimeReached,
    MessageStatusChanged,
    EventDeadLettered,
    IncomingServerConfigured,
    IncomingServerRemoved,
    AliasConfigured,
    AliasRemoved,
    InboundMailReceived,
    InboundMailRejected,
    InboundMailRouted,
    SentMessageRecorded,
    InboundReplyLookupRequested,
    InboundAliasMatched,
    IncomingServerChecked,
)

__all__ = [
    "ALL_EVENTS",
    "CONFIG_EVENTS",
    "AliasConfigured",
    "AliasRemoved",
    "InboundAliasMatched",
    "InboundMailReceived",
    "InboundMailRejected",
    "InboundMailRouted",
    "InboundReplyLookupRequested",
    "IncomingServerChecked",
    "IncomingServerConfigured",
    "IncomingServerRemoved",
    "SentMessageRecorded",
    "DeliveryAttempted",
    "DeliveryStarted",
    "Event",
    "EventDeadLettered",
    "InvalidEvent",
    "MessageStatusChanged",
    "OutgoingServerConfigured",
    "OutgoingServerRemoved",
    "RetryTimeReached",
    "RoutingDecided",
    "SendRequested",
    "SettingsChanged",
    "decode",
    "decode_any",
    "encode",
]
