"""Budgets: how much RAM, flash, time and energy a model may use on its board.

A budget is given in absolute units (`ram_bytes: 131072`), as a share of the board
(`ram_fraction: 0.5` = at most half its SRAM), or both (the tighter one applies). The board's
own SRAM and flash always apply too: a model that does not fit the chip fails even without a
budget. Latency and energy are checked only when a budget names them.

    check_budgets(profile, budgets, board) -> BudgetReport    one row per checked metric
    require_within(report)                                    BudgetExceeded if any row is over
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from tinyops.errors import BudgetExceeded

if TYPE_CHECKING:
    # Annotations only: project files import `Budgets` and must not pull in the profiler.
    from rich.table import Table

    from tinyops.targets.catalog import Board
    from tinyops.targets.profile import Profile


class Budgets(BaseModel):
    """Limits for one model on one board; every field is optional."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ram_bytes: int | None = Field(
        default=None, gt=0, description="Most RAM (arena + runtime state) allowed, bytes."
    )
    flash_bytes: int | None = Field(
        default=None, gt=0, description="Most flash (model + runtime code) allowed, bytes."
    )
    latency_ms: float | None = Field(
        default=None, gt=0, description="Longest estimated inference allowed, milliseconds."
    )
    energy_mj: float | None = Field(
        default=None, gt=0, description="Most estimated energy per inference, millijoules."
    )
    ram_fraction: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Most RAM allowed as a share of the board's SRAM (0.5 = half).",
    )
    flash_fraction: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Most flash allowed as a share of the board's flash (0.5 = half).",
    )


@dataclass(frozen=True)
class BudgetRow:
    """One checked metric: measured value, the limit that applied, and where it came from."""

    metric: str
    measured: float
    limit: float
    unit: str
    within: bool
    basis: str

    @property
    def over_by(self) -> float:
        return max(self.measured - self.limit, 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "measured": self.measured,
            "limit": self.limit,
            "unit": self.unit,
            "within": self.within,
            "basis": self.basis,
        }


def _fmt(value: float, unit: str) -> str:
    if unit == "bytes":
        return f"{round(value):,} bytes"
    return f"{value:,.3g} {unit}" if value < 1000 else f"{value:,.0f} {unit}"


@dataclass(frozen=True)
class BudgetReport:
    """The budget check of one profile: rows in the order ram, flash, latency, energy."""

    board_id: str
    rows: tuple[BudgetRow, ...]

    @property
    def passed(self) -> bool:
        return all(row.within for row in self.rows)

    @property
    def over(self) -> tuple[BudgetRow, ...]:
        return tuple(row for row in self.rows if not row.within)

    def to_dict(self) -> dict[str, Any]:
        return {
            "board_id": self.board_id,
            "passed": self.passed,
            "rows": [row.to_dict() for row in self.rows],
        }

    def render(self) -> Table:
        """A rich table: one line per metric, over-budget lines in red."""
        from rich.table import Table

        table = Table(title=f"Budget on {self.board_id}")
        for name in ("metric", "measured", "limit", "use", "limit from", "ok"):
            table.add_column(
                name, justify="right" if name in ("measured", "limit", "use") else "left"
            )
        for row in self.rows:
            share = f"{row.measured / row.limit:.0%}" if row.limit else "-"
            table.add_row(
                row.metric,
                _fmt(row.measured, row.unit),
                _fmt(row.limit, row.unit),
                share,
                row.basis,
                "yes" if row.within else "OVER",
                style=None if row.within else "bold red",
            )
        return table


def _tightest(
    candidates: list[tuple[float, str]],
) -> tuple[float, str]:
    return min(candidates, key=lambda c: c[0])


def check_budgets(profile: Profile, budgets: Budgets, board: Board) -> BudgetReport:
    """Compare a profile with its budgets and its board's capacity."""
    rows: list[BudgetRow] = []

    def capacity_row(
        metric: str, measured: int, absolute: int | None, fraction: float | None, size: int
    ) -> None:
        what = "SRAM" if metric == "ram" else "flash"
        candidates: list[tuple[float, str]] = [(float(size), f"board {what}")]
        if absolute is not None:
            candidates.append((float(absolute), f"{metric}_bytes budget"))
        if fraction is not None:
            candidates.append((fraction * size, f"{metric}_fraction {fraction:g} of {what}"))
        limit, basis = _tightest(candidates)
        rows.append(BudgetRow(metric, float(measured), limit, "bytes", measured <= limit, basis))

    capacity_row(
        "ram", profile.ram_bytes, budgets.ram_bytes, budgets.ram_fraction, board.sram_bytes
    )
    capacity_row(
        "flash", profile.flash_bytes, budgets.flash_bytes, budgets.flash_fraction, board.flash_bytes
    )
    if budgets.latency_ms is not None:
        rows.append(
            BudgetRow(
                "latency",
                profile.latency_ms,
                budgets.latency_ms,
                "ms",
                profile.latency_ms <= budgets.latency_ms,
                "latency_ms budget, estimated",
            )
        )
    if budgets.energy_mj is not None:
        rows.append(
            BudgetRow(
                "energy",
                profile.energy_mj,
                budgets.energy_mj,
                "mJ",
                profile.energy_mj <= budgets.energy_mj,
                "energy_mj budget, estimated",
            )
        )
    return BudgetReport(board_id=board.id, rows=tuple(rows))


def require_within(report: BudgetReport) -> None:
    """Raise `BudgetExceeded` listing every metric over its limit and by how much."""
    over = report.over
    if not over:
        return
    parts = [
        f"{row.metric} {_fmt(row.measured, row.unit)} > {_fmt(row.limit, row.unit)} "
        f"({row.basis}): over by {_fmt(row.over_by, row.unit)} "
        f"(+{row.over_by / row.limit:.1%})"
        for row in over
    ]
    raise BudgetExceeded(
        f"model over budget on {report.board_id}: " + "; ".join(parts), report=report
    )
