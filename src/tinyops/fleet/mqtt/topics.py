"""Where the device protocol travels on an MQTT broker: topics and the broker's address.

Every device has its own branch of the topic tree under a prefix (default `tinyops`):

    {prefix}/dev/{device_id}/req/{op}    device → server   a request
    {prefix}/dev/{device_id}/res/{op}    server → device   the reply to it
    {prefix}/dev/{device_id}/notify      server → device   "check in now"

`op` is one of `OPS`. One branch per device is what lets a broker ACL confine a device to
its own topics (`tinyops/dev/%u/...`, docs/device-protocol.md, *MQTT*); the server also
checks that the device id in the topic is the one its token belongs to.

Broker URLs: `mqtt://[user[:password]@]host[:port]` (TCP, port 1883 by default) and
`mqtts://...` (TLS, port 8883 by default, verified against the system's CA store).
Nothing here imports paho; the settings of the server import this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal, get_args
from urllib.parse import unquote, urlsplit

DEFAULT_PREFIX: Final = "tinyops"
Op = Literal["enroll", "checkin", "status", "telemetry", "sketches", "commands", "command_result"]
OPS: Final[tuple[str, ...]] = get_args(Op)
TopicKind = Literal["req", "res", "notify"]
# Characters that may not appear in a topic level: the separator, the wildcards and NUL.
_FORBIDDEN_IN_LEVEL: Final = frozenset("/+#\x00")
# Longest prefix accepted, in characters (topics stay far below MQTT's 65,535-byte limit).
MAX_PREFIX_CHARS: Final = 128
DEFAULT_PORTS: Final = {"mqtt": 1883, "mqtts": 8883}


def check_prefix(prefix: str) -> str:
    """`prefix` if it can start every topic of the protocol; ValueError saying why not."""
    if not prefix:
        raise ValueError("MQTT topic prefix is empty: expected e.g. 'tinyops' or 'site-a/fleet'")
    if len(prefix) > MAX_PREFIX_CHARS:
        raise ValueError(
            f"MQTT topic prefix {prefix[:40]!r}... has {len(prefix)} characters: at most "
            f"{MAX_PREFIX_CHARS}"
        )
    if prefix.startswith("$"):
        raise ValueError(
            f"MQTT topic prefix {prefix!r} starts with '$': brokers reserve those topics"
        )
    for level in prefix.split("/"):
        if not level or _FORBIDDEN_IN_LEVEL & set(level):
            raise ValueError(
                f"MQTT topic prefix {prefix!r}: every level between '/' must be non-empty "
                "and free of '+', '#' and NUL"
            )
    return prefix


def check_level(value: str, what: str) -> str:
    """`value` if it can be one topic level (a device id, an op); ValueError otherwise."""
    if not value or _FORBIDDEN_IN_LEVEL & set(value):
        raise ValueError(
            f"{what} {value!r} cannot be an MQTT topic level: expected a non-empty name "
            "without '/', '+', '#' or NUL"
        )
    return value


@dataclass(frozen=True)
class TopicMatch:
    """What a topic of the protocol names."""

    device_id: str
    kind: TopicKind
    op: str | None = None
    """The operation of a request or reply (possibly not one of OPS); None for notify."""


@dataclass(frozen=True)
class Topics:
    """The protocol's topics under one prefix."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        check_prefix(self.prefix)

    def _device(self, device_id: str) -> str:
        return f"{self.prefix}/dev/{check_level(device_id, 'device id')}"

    def request(self, device_id: str, op: str) -> str:
        return f"{self._device(device_id)}/req/{check_level(op, 'operation')}"

    def reply(self, device_id: str, op: str) -> str:
        return f"{self._device(device_id)}/res/{check_level(op, 'operation')}"

    def notify(self, device_id: str) -> str:
        return f"{self._device(device_id)}/notify"

    @property
    def requests(self) -> str:
        """The filter the server subscribes to: every device's requests."""
        return f"{self.prefix}/dev/+/req/+"

    def device_filters(self, device_id: str) -> tuple[str, str]:
        """The filters a device subscribes to: its replies and its notifications."""
        base = self._device(device_id)
        return f"{base}/res/#", f"{base}/notify"

    def parse(self, topic: str) -> TopicMatch | None:
        """The device, kind and op of a protocol topic under this prefix; None otherwise."""
        head = self.prefix + "/dev/"
        if not topic.startswith(head):
            return None
        levels = topic[len(head) :].split("/")
        if not levels[0]:
            return None
        if len(levels) == 2 and levels[1] == "notify":
            return TopicMatch(levels[0], "notify")
        if len(levels) == 3 and levels[1] in ("req", "res") and levels[2]:
            kind: TopicKind = "req" if levels[1] == "req" else "res"
            return TopicMatch(levels[0], kind, levels[2])
        return None


@dataclass(frozen=True)
class Broker:
    """Where an MQTT broker listens and how to log in to it."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        """`host:port` (for messages; never shows the password)."""
        return f"{self.host}:{self.port}"


def parse_broker_url(url: str) -> Broker:
    """`mqtt://[user[:password]@]host[:port]` or `mqtts://...` → Broker; ValueError if not."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(
            f"MQTT broker URL {_redacted(url)!r}: expected mqtt://host[:port] or "
            "mqtts://host[:port] (TLS)"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(
            f"MQTT broker URL {_redacted(url)!r}: expected no path, query or fragment after "
            "host[:port] (the topic prefix is a separate setting)"
        )
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(
            f"MQTT broker URL {_redacted(url)!r}: the port is not a number in 1..65535"
        ) from exc
    if not parts.hostname:
        raise ValueError(f"MQTT broker URL {_redacted(url)!r} names no host")
    return Broker(
        host=parts.hostname,
        port=port or DEFAULT_PORTS[scheme],
        tls=scheme == "mqtts",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


def _redacted(url: str) -> str:
    """The URL without its password, for error messages."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{host}"


__all__ = [
    "DEFAULT_PREFIX",
    "OPS",
    "Broker",
    "Op",
    "TopicKind",
    "TopicMatch",
    "Topics",
    "check_level",
    "check_prefix",
    "parse_broker_url",
]
