"""Seeded generator of sample exports with the real exports' layout.

Writes ``month_NNN/`` folders holding the six files with exactly the real
columns, plus ``as_of.csv`` saying which folder is which month. Values are
plausible and consistent with each other: contract types and fees are
distributed like the real data, ``months_active`` grows by one each month,
``plan_stream_*`` are empty exactly when ``net_service`` is ``No``, counts are
non-negative integers, and labels (both classes) depend on the features and
change between months. Same seed, same bytes. Fully vectorised, so a million
users per month costs seconds.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from streamflow.ingest import month_end
from streamflow.raw_schema import EXPORTS_BY_NAME

CONTRACTS = np.array(["Month-to-month", "One year", "Two year"])
NET_SERVICES = np.array(["DSL", "Fiber optic", "No"])
NET_P = [0.34, 0.44, 0.22]  # real: 2421 / 3096 / 1526
LETTERS = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
ID_SPACE = 10_000 * 26**5  # "NNNN-XXXXX", as in the real exports
ID_MULTIPLIER = 2_654_435_761  # odd and not a multiple of 13: a bijection modulo ID_SPACE


def _user_ids(n: int, rng: np.random.Generator) -> np.ndarray:
    # An affine bijection of 0..n-1 into the id space: unique by construction, scattered, seeded.
    offset = int(rng.integers(0, ID_SPACE))
    codes = (np.arange(n, dtype=np.int64) * ID_MULTIPLIER + offset) % ID_SPACE
    digits, rest = np.divmod(codes, 26**5)
    letters = np.empty((n, 5), dtype="<U1")
    for pos in range(4, -1, -1):
        rest, idx = np.divmod(rest, 26)
        letters[:, pos] = LETTERS[idx]
    prefix = np.char.zfill(digits.astype(str), 4)
    suffix = letters[:, 0].astype("<U5")
    for pos in range(1, 5):
        suffix = np.char.add(suffix, letters[:, pos])
    return np.char.add(np.char.add(prefix, "-"), suffix)


def _bool_text(values: np.ndarray) -> np.ndarray:
    return np.where(values, "True", "False")


def _static_population(n: int, rng: np.random.Generator, first_as_of: date) -> pd.DataFrame:
    """What does not change from month to month."""
    # 1..72 at the first month; 54% above 24 months, as in the real data (whose tenure is U-shaped).
    long_tenure = rng.random(n) < 0.54
    months_active = np.where(long_tenure, rng.integers(25, 73, n), rng.integers(1, 25, n))
    net = rng.choice(NET_SERVICES, n, p=NET_P)
    # Contract mix by tenure as in the real data, which gives its overall 55% / 21% / 24%.
    contract = np.where(
        long_tenure,
        rng.choice(CONTRACTS, n, p=[0.30, 0.30, 0.40]),
        rng.choice(CONTRACTS, n, p=[0.85, 0.10, 0.05]),
    )
    has_internet = net != "No"
    tv = np.where(has_internet, rng.random(n) < 0.49, False)
    movies = np.where(has_internet, rng.random(n) < 0.50, False)
    base_fee = np.select([net == "No", net == "DSL"],
                         [rng.uniform(18.25, 26.0, n), rng.uniform(23.0, 75.0, n)],
                         rng.uniform(68.0, 100.0, n))
    fee = np.round(base_fee + 9.5 * tv + 9.5 * movies, 2)
    signup_offset_days = ((months_active - 1) * 30.4).astype(int) + rng.integers(0, 28, n)
    signup = pd.Timestamp(first_as_of) - pd.to_timedelta(signup_offset_days, unit="D")
    return pd.DataFrame({
        "user_id": _user_ids(n, rng),
        "signup_date": signup.strftime("%Y-%m-%d"),
        "user_gender": rng.choice(np.array(["Female", "Male"]), n),
        "user_is_senior": rng.random(n) < 0.16,
        "has_family": rng.random(n) < 0.48,
        "has_dependents": rng.random(n) < 0.30,
        "months_active": months_active,
        "net_service": net,
        "contract_type": contract,
        "plan_stream_tv": tv,
        "plan_stream_movies": movies,
        "paperless_billing": rng.random(n) < 0.59,
        "monthly_fee": fee,
        "engagement": rng.gamma(4.0, 0.25, n),  # a per-user trait that drives usage
    })


def _month_files(pop: pd.DataFrame, month: int, rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    n = len(pop)
    months_active = pop["months_active"].to_numpy() + month
    fee = pop["monthly_fee"].to_numpy()
    total_paid = np.round(fee * months_active * rng.uniform(0.93, 1.05, n), 2)
    net = pop["net_service"].to_numpy()
    no_net = net == "No"
    watch = pop["engagement"].to_numpy() * rng.gamma(5.0, 5.0, n)
    failed = rng.poisson(0.18, n)
    tickets = rng.poisson(0.33, n)
    resolution = np.round(rng.gamma(3.0, 4.0, n), 1)
    month_to_month = pop["contract_type"].to_numpy() == "Month-to-month"
    logit = (-1.6 + 1.5 * month_to_month - 0.035 * months_active + 0.012 * (fee - 65)
             + 0.6 * failed + 0.35 * tickets - 0.02 * watch)
    churn = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))
    ids = pop["user_id"].to_numpy()
    return {
        "users": pd.DataFrame({
            "user_id": ids,
            "signup_date": pop["signup_date"],
            "user_gender": pop["user_gender"],
            "user_is_senior": _bool_text(pop["user_is_senior"]),
            "has_family": _bool_text(pop["has_family"]),
            "has_dependents": _bool_text(pop["has_dependents"]),
        }),
        "subscriptions": pd.DataFrame({
            "user_id": ids,
            "months_active": months_active,
            "plan_stream_tv": np.where(no_net, "", _bool_text(pop["plan_stream_tv"])),
            "plan_stream_movies": np.where(no_net, "", _bool_text(pop["plan_stream_movies"])),
            "contract_type": pop["contract_type"],
            "paperless_billing": _bool_text(pop["paperless_billing"]),
            "monthly_fee": fee,
            "total_paid": total_paid,
            "net_service": net,
        }),
        "usage_agg_30d": pd.DataFrame({
            "user_id": ids,
            "watch_hours_30d": watch,
            "avg_session_mins_7d": np.round(rng.normal(29.0, 6.0, n).clip(3.0, None), 6),
            "unique_devices_30d": rng.integers(1, 4, n),
            "skips_7d": rng.poisson(4.5, n),
            "rebuffer_events_7d": rng.poisson(2.3, n),
        }),
        "payments_agg_90d": pd.DataFrame({"user_id": ids, "failed_payments_90d": failed}),
        "support_agg_90d": pd.DataFrame({
            "user_id": ids,
            "support_tickets_90d": tickets,
            "ticket_avg_resolution_hrs_90d": resolution,
        }),
        "labels": pd.DataFrame({"user_id": ids, "churn_label": _bool_text(churn)}),
    }


def generate(out: Path, *, users: int, months: int, seed: int = 42,
             first_as_of: date = date(2024, 1, 31), progress: bool = True) -> list[Path]:
    """Write ``months`` folders of ``users`` users each into ``out``; returns the folders."""
    if users < 1 or months < 1:
        raise ValueError("users and months must be at least 1")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pop = _static_population(users, rng, first_as_of)
    folders, manifest = [], []
    for month in range(months):
        folder = out / f"month_{month:03d}"
        folder.mkdir(exist_ok=True)
        for name, frame in _month_files(pop, month, rng).items():
            assert list(frame.columns) == EXPORTS_BY_NAME[name].column_names
            frame.to_csv(folder / f"{name}.csv", index=False, lineterminator="\n")
        manifest.append((folder.name, month_end(first_as_of, month).isoformat()))
        folders.append(folder)
        if progress:
            print(f"wrote {folder} ({users} users, as_of {manifest[-1][1]})", flush=True)
    pd.DataFrame(manifest, columns=["folder", "as_of"]).to_csv(out / "as_of.csv", index=False,
                                                               lineterminator="\n")
    return folders
