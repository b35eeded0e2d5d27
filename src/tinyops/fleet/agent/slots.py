"""Where the agent keeps its slots, its state, its identity and unfinished downloads.

`DiskSlotStore(data_dir)` is the device's flash, laid out as

    <data_dir>/
      identity.json                       device id, token, server key (mode 0600)
      state.json                          `AgentState` (slots, trial, outbox, ...)
      slots/a/<name>-<version>-<target>.tinybundle
      slots/b/<name>-<version>-<target>.tinybundle
      downloads/<sha256>/<offset>.part    a download in progress, one file per flushed chunk

Every file is written with `tinyops.store.atomic` (temp file, fsync, rename): after a power
loss each file is either the old one or the whole new one. A download is kept as numbered
chunk files, each written atomically when the agent flushes its buffer (every MiB and when
the transfer stops), so resuming after a crash starts at the sum of the chunk sizes; a chunk
that was being written when the power went is simply absent. The whole file is then checked
against the announced sha256 before anything trusts it.

`MemorySlotStore` has the same semantics without a disk, for the fleet simulator: it
outlives an `Agent` object exactly as flash outlives a reboot.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Final, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from tinyops.errors import StoreError
from tinyops.fleet.agent.messages import SlotName
from tinyops.fleet.agent.state import AgentState, Identity, SlotContent
from tinyops.store.atomic import atomic_write_bytes, sha256_bytes

STATE_FILE: Final = "state.json"
IDENTITY_FILE: Final = "identity.json"
# The device token is a credential: owner read/write only.
IDENTITY_MODE: Final = 0o600
_CHUNK_NAME = re.compile(r"(\d{12})\.part")
_SHA256 = re.compile(r"[0-9a-f]{64}")

M = TypeVar("M", bound=BaseModel)


class SlotStore(Protocol):
    """Persistent storage of one device: state, identity, two slots, one download."""

    def load_state(self) -> AgentState | None:
        """The saved state, or None on a fresh device."""
        ...

    def save_state(self, state: AgentState) -> None:
        """Replace the saved state atomically."""
        ...

    def load_identity(self) -> Identity | None:
        """The enrollment result, or None before enrollment."""
        ...

    def save_identity(self, identity: Identity | None) -> None:
        """Replace (or, with None, forget) the enrollment result."""
        ...

    def write_slot(self, slot: SlotName, content: SlotContent, data: bytes) -> None:
        """Put the bundle `data` (described by `content`) in `slot`, replacing what was there."""
        ...

    def read_slot(self, slot: SlotName, content: SlotContent) -> bytes:
        """The bundle in `slot`; StoreError unless it is there with content's sha256."""
        ...

    def partial_size(self, sha256: str) -> int:
        """Bytes of the download of `sha256` kept so far."""
        ...

    def append_partial(self, sha256: str, chunk: bytes) -> None:
        """Keep `chunk` as the next bytes of the download of `sha256`."""
        ...

    def read_partial(self, sha256: str) -> bytes:
        """Every byte of the download of `sha256` kept so far."""
        ...

    def discard_partials(self, keep: str | None = None) -> None:
        """Forget every download except the one of `keep`."""
        ...


def _check_sha(sha256: str) -> str:
    if not _SHA256.fullmatch(sha256):
        raise ValueError(f"sha256 {sha256!r} must be 64 lowercase hex digits")
    return sha256


def _check_slot_data(slot: SlotName, content: SlotContent, data: bytes, where: str) -> bytes:
    digest = sha256_bytes(data)
    if digest != content.sha256:
        raise StoreError(
            f"{where}: slot {slot} holds a file with sha256 {digest}, the state says "
            f"{content.sha256} ({content.filename}): the slot is damaged"
        )
    return data


class DiskSlotStore:
    """Slots, state and downloads in a folder, every write atomic."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir)
        self.root.mkdir(parents=True, exist_ok=True)

    def _load(self, name: str, model: type[M]) -> M | None:
        path = self.root / name
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"{path}: cannot read ({exc.strerror or exc})") from exc
        try:
            return model.model_validate_json(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
                for err in exc.errors()
            )
            raise StoreError(
                f"{path}: not a valid agent {name} ({problems}); move it away to start the "
                "device afresh"
            ) from exc

    def load_state(self) -> AgentState | None:
        return self._load(STATE_FILE, AgentState)

    def save_state(self, state: AgentState) -> None:
        atomic_write_bytes(self.root / STATE_FILE, state.model_dump_json(indent=2).encode())

    def load_identity(self) -> Identity | None:
        return self._load(IDENTITY_FILE, Identity)

    def save_identity(self, identity: Identity | None) -> None:
        path = self.root / IDENTITY_FILE
        if identity is None:
            path.unlink(missing_ok=True)
            return
        atomic_write_bytes(path, identity.model_dump_json(indent=2).encode(), mode=IDENTITY_MODE)

    def _slot_dir(self, slot: SlotName) -> Path:
        if slot not in ("a", "b"):
            raise ValueError(f"slot must be 'a' or 'b', got {slot!r}")
        return self.root / "slots" / slot

    def write_slot(self, slot: SlotName, content: SlotContent, data: bytes) -> None:
        _check_slot_data(slot, content, data, str(self._slot_dir(slot)))
        if "/" in content.filename or content.filename.startswith("."):
            raise ValueError(f"slot file name {content.filename!r} must be a plain file name")
        folder = self._slot_dir(slot)
        atomic_write_bytes(folder / content.filename, data)
        for other in folder.iterdir():
            if other.name != content.filename and other.is_file():
                other.unlink()

    def read_slot(self, slot: SlotName, content: SlotContent) -> bytes:
        path = self._slot_dir(slot) / content.filename
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise StoreError(
                f"{path}: cannot read slot {slot} ({exc.strerror or exc}): the slot is damaged"
            ) from exc
        return _check_slot_data(slot, content, data, str(path))

    def _chunks(self, sha256: str) -> list[Path]:
        """The chunk files of a download, in order, up to the first gap."""
        folder = self.root / "downloads" / _check_sha(sha256)
        if not folder.is_dir():
            return []
        found: dict[int, Path] = {}
        for path in folder.iterdir():
            match = _CHUNK_NAME.fullmatch(path.name)
            if match:
                found[int(match[1])] = path
        chunks: list[Path] = []
        offset = 0
        while offset in found:
            chunks.append(found[offset])
            size = found[offset].stat().st_size
            if size == 0:
                break
            offset += size
        return chunks

    def partial_size(self, sha256: str) -> int:
        return sum(path.stat().st_size for path in self._chunks(sha256))

    def append_partial(self, sha256: str, chunk: bytes) -> None:
        if not chunk:
            return
        offset = self.partial_size(sha256)
        folder = self.root / "downloads" / _check_sha(sha256)
        atomic_write_bytes(folder / f"{offset:012d}.part", chunk)

    def read_partial(self, sha256: str) -> bytes:
        return b"".join(path.read_bytes() for path in self._chunks(sha256))

    def discard_partials(self, keep: str | None = None) -> None:
        folder = self.root / "downloads"
        if not folder.is_dir():
            return
        for entry in folder.iterdir():
            if entry.name != keep:
                if entry.is_dir():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()


class MemorySlotStore:
    """The same store in memory: one per simulated device, surviving its agent's restarts."""

    def __init__(self) -> None:
        self._state: AgentState | None = None
        self._identity: Identity | None = None
        self._slots: dict[SlotName, tuple[str, bytes]] = {}
        self._partials: dict[str, list[bytes]] = {}

    # States and identities are frozen models: keeping the object is as safe as a copy.
    def load_state(self) -> AgentState | None:
        return self._state

    def save_state(self, state: AgentState) -> None:
        self._state = state

    def load_identity(self) -> Identity | None:
        return self._identity

    def save_identity(self, identity: Identity | None) -> None:
        self._identity = identity

    def write_slot(self, slot: SlotName, content: SlotContent, data: bytes) -> None:
        if slot not in ("a", "b"):
            raise ValueError(f"slot must be 'a' or 'b', got {slot!r}")
        _check_slot_data(slot, content, data, "memory")
        self._slots[slot] = (content.filename, bytes(data))

    def read_slot(self, slot: SlotName, content: SlotContent) -> bytes:
        held = self._slots.get(slot)
        if held is None or held[0] != content.filename:
            raise StoreError(f"memory: slot {slot} does not hold {content.filename}")
        return _check_slot_data(slot, content, held[1], "memory")

    def partial_size(self, sha256: str) -> int:
        return sum(len(chunk) for chunk in self._partials.get(_check_sha(sha256), ()))

    def append_partial(self, sha256: str, chunk: bytes) -> None:
        if chunk:
            self._partials.setdefault(_check_sha(sha256), []).append(bytes(chunk))

    def read_partial(self, sha256: str) -> bytes:
        return b"".join(self._partials.get(_check_sha(sha256), ()))

    def discard_partials(self, keep: str | None = None) -> None:
        self._partials = {k: v for k, v in self._partials.items() if k == keep}


__all__ = ["IDENTITY_FILE", "STATE_FILE", "DiskSlotStore", "MemorySlotStore", "SlotStore"]
