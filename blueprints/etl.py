"""Node functions for `etl.yaml`: extract orders from a CSV, clean each row, aggregate, report.

Money is handled as `Decimal` and rounded to cents, so totals are exact and do not depend on
the order in which batch workers finish; it leaves a node as a float because outputs are JSON.
"""

from __future__ import annotations

import csv
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).parent / "data"
COLUMNS = ("order_id", "order_date", "region", "customer", "amount", "currency")
CENT = Decimal("0.01")

Row = dict[str, str]
Order = dict[str, Any]


def extract(name: str) -> list[Row]:
    """Read `data/<name>` (next to this module) and return its rows as string dicts."""
    path = DATA_DIR / name
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
        return [{c: row[c] or "" for c in COLUMNS} for row in reader]


def clean_row(row: Row, currency: str, rates: dict[str, float]) -> Order:
    """Validate and normalise one CSV row; convert its amount to `currency`.

    Raises ValueError, naming the order, for a bad date, a missing region, an amount that is
    not a non-negative number, or a currency that has no rate in `rates`.
    """
    order_id = row["order_id"].strip()
    amount = _amount(order_id, row["amount"])
    source_currency = row["currency"].strip().upper()
    if source_currency not in rates:
        known = ", ".join(sorted(rates))
        raise ValueError(f"order {order_id}: no rate for currency {source_currency!r} ({known})")
    converted = _cents(amount * Decimal(str(rates[source_currency])))
    return {
        "order_id": order_id,
        "date": _iso_date(order_id, row["order_date"]),
        "region": _region(order_id, row["region"]),
        "customer": " ".join(row["customer"].split()),
        "amount": float(converted),
        "currency": currency,
        "source_amount": float(amount),
        "source_currency": source_currency,
    }


def aggregate(orders: list[Order | None]) -> dict[str, dict[str, Any]]:
    """Count orders and total their amounts per region, sorted by region.

    `None` entries are the slots of rows the batch rejected; they are skipped.
    """
    counts: dict[str, int] = {}
    totals: dict[str, Decimal] = {}
    for order in orders:
        if order is None:
            continue
        region = order["region"]
        counts[region] = counts.get(region, 0) + 1
        totals[region] = totals.get(region, Decimal(0)) + Decimal(str(order["amount"]))
    return {r: {"orders": counts[r], "total": float(_cents(totals[r]))} for r in sorted(totals)}


def report(
    rows: list[Row], orders: list[Order | None], totals: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Summarise the run: rows read, loaded and rejected, the period, and the revenue."""
    loaded = [o for o in orders if o is not None]
    rejected = [rows[i]["order_id"].strip() for i, o in enumerate(orders) if o is None]
    grand_total = sum((Decimal(str(t["total"])) for t in totals.values()), Decimal(0))
    dates = sorted(o["date"] for o in loaded)
    return {
        "rows_read": len(rows),
        "rows_loaded": len(loaded),
        "rows_rejected": len(rejected),
        "rejected_orders": rejected,
        "period": {"from": dates[0], "to": dates[-1]} if dates else None,
        "currency": loaded[0]["currency"] if loaded else None,
        "grand_total": float(_cents(grand_total)),
        "top_region": max(totals, key=lambda r: totals[r]["total"]) if totals else None,
    }


def _amount(order_id: str, raw: str) -> Decimal:
    try:
        amount = Decimal(raw.strip())
    except InvalidOperation:
        # Decimal raises an ArithmeticError subclass; a bad row is a ValueError to the pipeline.
        raise ValueError(f"order {order_id}: amount {raw!r} is not a number") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"order {order_id}: amount {raw!r} is not a non-negative number")
    return amount


def _iso_date(order_id: str, raw: str) -> str:
    try:
        return date.fromisoformat(raw.strip()).isoformat()
    except ValueError:
        raise ValueError(f"order {order_id}: {raw!r} is not a valid date (YYYY-MM-DD)") from None


def _region(order_id: str, raw: str) -> str:
    region = raw.strip().title()
    if not region:
        raise ValueError(f"order {order_id}: region is missing")
    return region


def _cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_EVEN)
