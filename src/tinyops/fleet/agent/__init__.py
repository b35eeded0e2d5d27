"""The device agent: the reference client of the fleet protocol, and the simulator's engine.

    agent      `Agent` (one per device: boot, poll, update, commands, telemetry), `run_agent`
    decide     the pure decision from (agent state, check-in answer)
    state      the persistent state (A/B slots, trial, update job, report outbox) and its
               pure transitions, crash-loop counting included
    verify     the checks before installation: sha256 and size, signature and hashes,
               expiry, target, monotonic version or a server-signed rollback order
    selftest   golden vectors through LiteRT or TFLite Micro, cached by bundle sha256
    slots      `DiskSlotStore` (atomic files) and `MemorySlotStore` (simulator)
    transport  the `Transport` protocol; `http.HttpTransport` speaks it over HTTP (httpx,
               imported only when that module is)
    clock      `SystemClock`, `ManualClock` (virtual time), `SkewedClock`
    backoff    poll jitter and exponential backoff with full jitter
    probe      free memory and temperature of the device
    logbook    the agent's in-memory log (fetch_logs, telemetry)
    messages   the protocol's JSON bodies (docs/device-protocol.md)

Nothing here imports a TFLite runtime until a self-test runs.
"""

from tinyops.fleet.agent.agent import COMMAND_KINDS, Agent, AgentConfig, AgentError, run_agent
from tinyops.fleet.agent.backoff import Backoff, jittered_interval
from tinyops.fleet.agent.clock import Clock, ManualClock, SkewedClock, SystemClock
from tinyops.fleet.agent.decide import Decision, Idle, Proceed, Refuse, Skip, decide
from tinyops.fleet.agent.probe import DeviceProbe, FixedProbe, LinuxProbe
from tinyops.fleet.agent.selftest import (
    LiteRtSelfTest,
    SelfTest,
    SelfTestResult,
    TflmSelfTest,
)
from tinyops.fleet.agent.slots import DiskSlotStore, MemorySlotStore, SlotStore
from tinyops.fleet.agent.state import AgentState, Identity, SlotContent, on_boot
from tinyops.fleet.agent.transport import DownloadSink, Transport, TransportError
from tinyops.fleet.agent.verify import (
    BundleCache,
    UpdateRefused,
    VerifiedRelease,
    check_offer,
    verify_release,
)

__all__ = [
    "COMMAND_KINDS",
    "Agent",
    "AgentConfig",
    "AgentError",
    "AgentState",
    "Backoff",
    "BundleCache",
    "Clock",
    "Decision",
    "DeviceProbe",
    "DiskSlotStore",
    "DownloadSink",
    "FixedProbe",
    "Identity",
    "Idle",
    "LinuxProbe",
    "LiteRtSelfTest",
    "ManualClock",
    "MemorySlotStore",
    "Proceed",
    "Refuse",
    "SelfTest",
    "SelfTestResult",
    "SkewedClock",
    "Skip",
    "SlotContent",
    "SlotStore",
    "SystemClock",
    "TflmSelfTest",
    "Transport",
    "TransportError",
    "UpdateRefused",
    "VerifiedRelease",
    "check_offer",
    "decide",
    "jittered_interval",
    "on_boot",
    "run_agent",
    "verify_release",
]
