"""The monitoring members of a bundle: the reference profile and the policy devices follow.

A bundle made with monitoring carries two extra files, hashed in the signed manifest like
every other member:

    monitoring/profile.json   ReferenceProfile.to_dict(): the bins devices fill
    monitoring/policy.json    {"format": "tinyops.monitoring-policy", "version": 1,
                               "window_s": 3600, "summaries": "channels",
                               "sampling": {"max_samples_per_window": 0},
                               "reference_accuracy": 0.97}       # optional

`summaries` is the resolved kind (never "auto"): with the model's input shape from the
manifest it tells a device how to turn an input into the profile's feature row
(tinyops.monitor.summaries). `sampling.max_samples_per_window` bounds the raw rows a device
may send per window; 0 means none ever leave it. `reference_accuracy` (optional, beyond
the shared contract) is the shipped model's accuracy on the test split, the baseline the
server compares feedback labels with (performance drift).

`monitoring_from_files` reads both from a verified bundle's files; a bundle made before
monitoring existed has neither and gives None. Both the agent and the server use it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tinyops.errors import DataError
from tinyops.monitor.config import MAX_SAMPLES_PER_WINDOW
from tinyops.monitor.reference import ReferenceProfile
from tinyops.monitor.summaries import RESOLVED_KINDS, ResolvedKind

POLICY_FORMAT = "tinyops.monitoring-policy"
POLICY_VERSION = 1
PROFILE_MEMBER = "monitoring/profile.json"
POLICY_MEMBER = "monitoring/policy.json"


@dataclass(frozen=True)
class MonitoringPolicy:
    """How a device sketches: window length, summary kind, raw-sample allowance."""

    window_s: int = 3600
    summaries: ResolvedKind = "columns"
    max_samples_per_window: int = 0
    reference_accuracy: float | None = None
    """Accuracy of the shipped model on held-out data (the bundle stage writes the int8
    model's TFLM test accuracy): the baseline of performance drift. Optional."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": POLICY_FORMAT,
            "version": POLICY_VERSION,
            "window_s": self.window_s,
            "summaries": self.summaries,
            "sampling": {"max_samples_per_window": self.max_samples_per_window},
        }
        if self.reference_accuracy is not None:
            out["reference_accuracy"] = self.reference_accuracy
        return out

    @classmethod
    def from_dict(cls, data: Any) -> MonitoringPolicy:
        """Parse and check the JSON form; DataError naming the key when malformed."""
        where = "monitoring policy"
        if not isinstance(data, Mapping):
            raise DataError(f"{where}: expected a JSON object")
        if data.get("format") != POLICY_FORMAT:
            raise DataError(
                f"{where}: 'format' must be {POLICY_FORMAT!r}, got {data.get('format')!r}"
            )
        if data.get("version") != POLICY_VERSION:
            raise DataError(
                f"{where}: 'version' {data.get('version')!r} is not supported "
                f"(this tinyops reads version {POLICY_VERSION})"
            )
        window = data.get("window_s")
        if not isinstance(window, int) or isinstance(window, bool) or window < 1:
            raise DataError(f"{where}: 'window_s' must be a positive integer, got {window!r}")
        kind = data.get("summaries")
        if kind not in RESOLVED_KINDS:
            raise DataError(
                f"{where}: 'summaries' must be one of {', '.join(RESOLVED_KINDS)}, got {kind!r}"
            )
        sampling = data.get("sampling")
        if not isinstance(sampling, Mapping):
            raise DataError(f"{where}: 'sampling' must be an object")
        cap = sampling.get("max_samples_per_window")
        if (
            not isinstance(cap, int)
            or isinstance(cap, bool)
            or not 0 <= cap <= MAX_SAMPLES_PER_WINDOW
        ):
            raise DataError(
                f"{where}: 'sampling.max_samples_per_window' must be an integer in "
                f"0..{MAX_SAMPLES_PER_WINDOW}, got {cap!r}"
            )
        accuracy = data.get("reference_accuracy")
        if accuracy is not None and (
            not isinstance(accuracy, int | float)
            or isinstance(accuracy, bool)
            or not 0.0 <= accuracy <= 1.0
        ):
            raise DataError(
                f"{where}: 'reference_accuracy' must be a number in [0, 1], got {accuracy!r}"
            )
        return cls(
            window_s=window,
            summaries=kind,
            max_samples_per_window=cap,
            reference_accuracy=None if accuracy is None else float(accuracy),
        )


def monitoring_files(profile: ReferenceProfile, policy: MonitoringPolicy) -> dict[str, bytes]:
    """The two bundle members, as canonical JSON bytes (sorted keys: reproducible bundles)."""

    def dump(obj: Any) -> bytes:
        return (json.dumps(obj, sort_keys=True, separators=(",", ":")) + "\n").encode()

    return {PROFILE_MEMBER: dump(profile.to_dict()), POLICY_MEMBER: dump(policy.to_dict())}


def monitoring_from_files(
    files: Mapping[str, bytes],
) -> tuple[ReferenceProfile, MonitoringPolicy] | None:
    """Profile and policy from a bundle's files; None when the bundle has neither.

    DataError (naming the member) when only one is present or either is malformed.
    """
    has_profile, has_policy = PROFILE_MEMBER in files, POLICY_MEMBER in files
    if not has_profile and not has_policy:
        return None
    if not (has_profile and has_policy):
        missing = POLICY_MEMBER if has_profile else PROFILE_MEMBER
        raise DataError(f"bundle has monitoring but lacks {missing}")
    parsed = {}
    for member in (PROFILE_MEMBER, POLICY_MEMBER):
        try:
            parsed[member] = json.loads(files[member])
        except (UnicodeDecodeError, ValueError) as exc:
            raise DataError(f"bundle member {member}: not valid JSON ({exc})") from exc
    try:
        profile = ReferenceProfile.from_dict(parsed[PROFILE_MEMBER])
    except DataError as exc:
        raise DataError(f"bundle member {PROFILE_MEMBER}: {exc}") from exc
    try:
        policy = MonitoringPolicy.from_dict(parsed[POLICY_MEMBER])
    except DataError as exc:
        raise DataError(f"bundle member {POLICY_MEMBER}: {exc}") from exc
    return profile, policy


__all__ = [
    "POLICY_FORMAT",
    "POLICY_MEMBER",
    "POLICY_VERSION",
    "PROFILE_MEMBER",
    "MonitoringPolicy",
    "monitoring_files",
    "monitoring_from_files",
]
