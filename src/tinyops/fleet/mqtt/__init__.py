"""MQTT, the fleet protocol's second transport (docs/device-protocol.md, *MQTT*).

    topics     the per-device topic tree under a prefix, broker URLs (no paho import)
    wire       the JSON of requests, replies and notifications (no paho import)
    bridge     `MqttBridge`, the server side: every device request through the same
               `DeviceService` as HTTP; "check in now" notifications (paho in a thread)
    session    `MqttSession`, the device side: one connection on the asyncio loop, for
               one device or for the simulator's thousands
    transport  `MqttTransport`, the agent's `Transport` over a session (artifacts still
               over HTTP), and `WakeableClock`, which notifications wake

Importing this package is cheap; paho loads with the bridge or a session.
"""

from tinyops.fleet.mqtt.topics import DEFAULT_PREFIX, OPS, Broker, Topics, parse_broker_url

__all__ = ["DEFAULT_PREFIX", "OPS", "Broker", "Topics", "parse_broker_url"]
