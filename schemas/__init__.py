"""Postlane's events. See schemas/base.py for the rules every event follows."""

from .base import Event, InvalidEvent, decode, decode_any, encode
from .config import (
    CONFIG_EVENTS,
    OutgoingServerConfigured,
    OutgoingServerRemoved,
    SettingsChanged,
)
from .deadletter import EventDeadLettered
from .delivery import DeliveryAttempted, DeliveryStarted, RetryTimeReached
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
)

__all__ = [
    "ALL_EVENTS",
    "CONFIG_EVENTS",
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
