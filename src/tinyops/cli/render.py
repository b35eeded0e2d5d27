"""Rich rendering of pipeline records for the terminal. Pure functions of plain data."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.markup import escape
from rich.table import Table


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def stages_table(run: dict[str, Any]) -> Table:
    t = Table(title=f"run {run['run_id']} — {run['status']}", title_justify="left")
    t.add_column("stage")
    t.add_column("status")
    t.add_column("cache")
    t.add_column("time", justify="right")
    t.add_column("result")
    colors = {"ok": "green", "cached": "cyan", "failed": "red", "skipped": "dim"}
    for s in run["stages"]:
        status = s["status"]
        t.add_row(
            s["name"],
            f"[{colors.get(status, 'white')}]{status}[/]",
            "hit" if s["cache_hit"] else ("" if status == "skipped" else "miss"),
            f"{s['duration_s']:.2f}s" if status != "skipped" else "",
            stage_summary(s),
        )
    return t


def stage_summary(s: dict[str, Any]) -> str:
    o = s.get("output") or {}
    if s["status"] == "failed":
        return f"[red]{escape(s.get('error') or '')}[/]"
    name = s["name"]
    if name == "ingest" and o:
        return f"snapshot {o['snapshot_id'][:12]} · {o['samples']:,} samples"
    if name == "validate" and o:
        checks = (o.get("gate") or {}).get("checks", [])
        return f"{len(checks)} checks passed"
    if name == "features" and o:
        return f"pipeline {o['pipeline_hash'][:12]} · input {tuple(o['input_shape'])}"
    if name == "train" and o:
        acc = o["metrics"].get("test_accuracy")
        tail = f" · float test acc {acc:.4f}" if acc is not None else ""
        return f"mlflow run {o['mlflow_run_id'][:12]} · {o['epochs_run']} epochs{tail}"
    if name == "optimize" and o:
        return f"{len(o['variants'])} variants · deploy {o['deploy']['variant']}"
    if name == "profile" and o:
        pr = o["profile"]
        return (
            f"{o['board']}: arena {pr['arena_bytes']:,} B · flash {pr['flash_bytes']:,} B"
            f" · {pr['latency_ms']:.2f} ms · {pr['energy_mj']:.3f} mJ"
        )
    if name == "device-validate" and o:
        acc = o.get("accuracy")
        a = f"acc {acc:.4f} · " if acc is not None else ""
        return f"TFLM {a}agreement {o['agreement']:.4f} on {o['samples']} samples"
    if name == "compile" and o:
        if "skipped" in o:
            return f"not compiled: {escape(o['skipped'])}"
        feats = " + features" if o.get("features") else ""
        return f"C{feats}: RAM {o['ram_bytes']:,} B · flash ≈ {o['flash_bytes']:,} B"
    if name == "bundle" and o:
        return f"{o['bundle']} · {o['sha256'][:12]}"
    if name == "register" and o:
        return f"{o['model_name']} v{o['model_version']} @{o['alias']}"
    return ""


def variants_table(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="model variants (accuracy on the test split, each .tflite run)")
    for col in ("variant", "size B", "sparsity", "zlib B", "accuracy", "Δ vs float"):
        t.add_column(col, justify="left" if col == "variant" else "right")
    for r in rows:
        delta = r.get("delta_vs_float")
        t.add_row(
            r["variant"],
            _fmt(r["size_bytes"]),
            f"{r['sparsity']:.1%}",
            _fmt(r["compressed_bytes"]),
            "—" if r["accuracy"] is None else f"{r['accuracy']:.4f}",
            "—" if delta is None else f"{delta + 0.0:+.4f}",  # + 0.0 turns -0.0 into 0.0
        )
    return t


def budget_table(report: dict[str, Any]) -> Table:
    t = Table(title="budgets")
    for col in ("metric", "measured", "limit", "unit", "ok"):
        t.add_column(col, justify="left" if col in ("metric", "unit") else "right")
    for r in report.get("rows", []):
        ok = r.get("within")
        t.add_row(
            str(r["metric"]),
            _fmt(r["measured"]),
            _fmt(r["limit"]),
            str(r.get("unit", "")),
            "[green]yes[/]" if ok else "[red]OVER[/]",
        )
    return t


def checks_table(title: str, checks: list[dict[str, Any]]) -> Table:
    t = Table(title=title)
    t.add_column("check")
    t.add_column("status")
    t.add_column("detail")
    for c in checks:
        status = c.get("status") or ("pass" if c.get("passed") else "fail")
        color = {"pass": "green", "warn": "yellow", "fail": "red"}.get(status, "white")
        detail = c.get("detail")
        if detail is None:
            detail = f"{_fmt(c.get('value'))} (limit {_fmt(c.get('limit'))})"
        t.add_row(str(c.get("name") or c.get("check")), f"[{color}]{status}[/]", str(detail))
    return t


def deployment_table(d: dict[str, Any]) -> Table:
    """A deployment: its phases with device counts per status."""
    rel = d["release"]
    title = (
        f"deployment {d['id']} — {d['status']} · {rel['name']} {rel['version']} → "
        f"{rel['target']} · {d['device_count']} devices"
    )
    if d.get("reason"):
        title += f"\n{escape(d['reason'])}"
    t = Table(title=title, title_justify="left")
    for col in ("phase", "share", "devices", "statuses", "opened", "passed"):
        t.add_column(col)
    for ph in d["phases"]:
        share = f"{ph['percent']:g}%" if ph.get("percent") is not None else f"{ph['count']}"
        counts = " ".join(f"{k}={v}" for k, v in sorted(ph["counts"].items()) if v)
        marker = "▶ " if ph["index"] == d["open_phase"] and d["status"] == "running" else ""
        t.add_row(
            f"{marker}{ph['index']}",
            share,
            str(ph["devices"]),
            counts or "—",
            _time(ph.get("opened_at")),
            _time(ph.get("passed_at")),
        )
    return t


def deployments_table(deployments: list[dict[str, Any]]) -> Table:
    """Deployments, one row each: release, status, open phase, devices by status."""
    t = Table(title=f"{len(deployments)} deployments", title_justify="left")
    for col in ("id", "release", "status", "phase", "devices", "statuses", "created"):
        t.add_column(col)
    for d in deployments:
        rel = d["release"]
        totals: dict[str, int] = {}
        for ph in d["phases"]:
            for k, v in ph["counts"].items():
                totals[k] = totals.get(k, 0) + v
        t.add_row(
            str(d["id"]),
            f"{rel['name']} {rel['version']} → {rel['target']}",
            d["status"],
            f"{d['open_phase'] + 1}/{len(d['phases'])}",
            str(d["device_count"]),
            " ".join(f"{k}={v}" for k, v in sorted(totals.items()) if v) or "—",
            _time(d.get("created_at")),
        )
    return t


def _time(value: Any) -> str:
    """An ISO 8601 time to the second, as `2026-11-27 12:03:57`."""
    return "—" if not value else str(value).replace("T", " ")[:19]


def simulation_table(s: dict[str, Any], final: bool = False) -> Table:
    """The fleet simulator's live view (and its final summary)."""
    t = Table(
        min_width=72,
        title=f"fleet simulation — {s['devices']} devices · {s['elapsed_s']:.1f} s"
        f" · CPU {s['cpu_s']:.1f} s" + (" · done" if final else ""),
        title_justify="left",
    )
    t.add_column("what")
    t.add_column("count", justify="right")
    for version, n in s["versions"].items():
        t.add_row(f"running {version}", f"{n:,}")
    for status, n in s["last_status"].items():
        t.add_row(f"last report: {status}", f"{n:,}")
    for key in ("resets", "power_losses", "crashes", "dropped_requests", "corrupted_downloads"):
        t.add_row(key.replace("_", " "), f"{s[key]:,}")
    return t


def _age(last_seen: str | None, now: datetime) -> str:
    if last_seen is None:
        return "never"
    seconds = (now - datetime.fromisoformat(last_seen.replace("Z", "+00:00"))).total_seconds()
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{max(seconds, 0):.0f}s ago"


def health_summary(health: dict[str, Any] | None) -> str:
    """The check-in health in a few words: resets, free memory, uptime (those reported)."""
    if not health:
        return "-"
    shown = (
        ("resets", "resets {:,}"),
        ("free_memory_bytes", "free {:,} B"),
        ("uptime_s", "up {:,.0f} s"),
    )
    parts = [
        form.format(health[key])
        for key, form in shown
        if isinstance(health.get(key), int | float) and not isinstance(health.get(key), bool)
    ]
    return " · ".join(parts) or "-"


def inventory_table(devices: list[dict[str, Any]], now: datetime) -> Table:
    table = Table(title=f"devices ({len(devices)})")
    for column in ("device", "hardware", "status", "release", "last seen", "health", "tags"):
        table.add_column(column)
    for d in devices:
        installed = d.get("installed")
        release = f"{installed['name']} {installed['version']}" if installed else "-"
        tags = ", ".join(f"{k}:{v}" for k, v in sorted((d.get("tags") or {}).items()))
        table.add_row(
            escape(d["id"]),
            escape(d["hardware"]),
            d["status"],
            escape(release),
            _age(d.get("last_seen"), now),
            health_summary(d.get("health")),
            escape(tags),
        )
    return table


def alerts_table(alerts: list[dict[str, Any]]) -> Table:
    """A server's alerts, one row each (`tinyops alerts list`)."""
    table = Table("state", "rule", "severity", "labels", "value", "since", "summary")
    hidden = {"alertname", "severity"}
    for alert in alerts:
        labels = ", ".join(f"{k}={v}" for k, v in alert["labels"].items() if k not in hidden)
        table.add_row(
            alert["state"],
            alert["rule"],
            alert["severity"],
            escape(labels),
            f"{alert['value']:g}",
            str(alert["since"]),
            escape(alert["summary"]),
        )
    return table
