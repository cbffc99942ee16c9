"""The sample-export generator: the real exports' layout, consistent values, same seed same bytes.

No database needed: these read the CSVs the generator writes.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest

from streamflow.generate import generate
from streamflow.raw_schema import EXPORT_FILES
from streamflow.settings import REAL_EXPORTS_DIR

USERS = 20_000


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("generated")
    generate(out, users=USERS, months=3, seed=5, progress=False)
    return out


def read(exports: Path, month: int, name: str) -> pd.DataFrame:
    # Everything as text, empty cells kept as "": what the loader sees.
    return pd.read_csv(exports / f"month_{month:03d}" / f"{name}.csv", dtype=str, keep_default_na=False)


def header(path: Path) -> list[str]:
    with path.open(newline="") as fh:
        return next(csv.reader(fh))


def test_same_files_and_columns_as_the_real_exports(exports: Path):
    assert sorted(p.name for p in exports.iterdir()) == ["as_of.csv", "month_000", "month_001", "month_002"]
    for month in range(3):
        folder = exports / f"month_{month:03d}"
        assert sorted(p.name for p in folder.iterdir()) == sorted(e.filename for e in EXPORT_FILES)
        for export in EXPORT_FILES:
            assert header(folder / export.filename) == export.column_names
            if REAL_EXPORTS_DIR.is_dir():
                assert header(folder / export.filename) == header(
                    REAL_EXPORTS_DIR / "month_000" / export.filename)
            assert len(read(exports, month, export.name)) == USERS


def test_same_seed_same_bytes_other_seed_other_data(exports: Path, tmp_path: Path):
    again = tmp_path / "again"
    other = tmp_path / "other"
    generate(again, users=USERS, months=3, seed=5, progress=False)
    generate(other, users=USERS, months=1, seed=6, progress=False)
    for path in sorted(exports.rglob("*.csv")):
        assert (again / path.relative_to(exports)).read_bytes() == path.read_bytes(), path
    assert (other / "month_000" / "usage_agg_30d.csv").read_bytes() != (
        exports / "month_000" / "usage_agg_30d.csv").read_bytes()


def test_values_are_consistent(exports: Path):
    subs = [read(exports, m, "subscriptions").set_index("user_id") for m in range(3)]
    assert subs[0].index.is_unique
    for later in subs[1:]:
        assert later.index.equals(subs[0].index)  # the same users every month, in the same order
    # months_active grows by exactly one each month
    tenure = [s["months_active"].astype(int) for s in subs]
    assert ((tenure[1] - tenure[0]) == 1).all() and ((tenure[2] - tenure[1]) == 1).all()
    assert (tenure[0] >= 1).all()
    for s in subs:
        no_net = s["net_service"] == "No"
        for col in ("plan_stream_tv", "plan_stream_movies"):
            assert ((s[col] == "") == no_net).all(), col  # empty exactly when there is no internet
            assert set(s.loc[~no_net, col]) == {"True", "False"}
        fee = s["monthly_fee"].astype(float)
        assert (fee > 0).all() and (s["total_paid"].astype(float) > 0).all()
        assert set(s["net_service"]) == {"DSL", "Fiber optic", "No"}
    counts = {"usage_agg_30d": ["unique_devices_30d", "skips_7d", "rebuffer_events_7d"],
              "payments_agg_90d": ["failed_payments_90d"], "support_agg_90d": ["support_tickets_90d"]}
    for name, cols in counts.items():
        frame = read(exports, 0, name)
        for col in cols:
            assert frame[col].str.fullmatch(r"\d+").all(), (name, col)  # non-negative integers


def test_distributions_like_the_real_exports(exports: Path):
    subs = read(exports, 0, "subscriptions")
    share = subs["contract_type"].value_counts(normalize=True)
    real = {"Month-to-month": 3875 / 7043, "One year": 1473 / 7043, "Two year": 1695 / 7043}
    for contract, expected in real.items():
        assert abs(share[contract] - expected) < 0.03, (contract, share[contract])
    fee = subs["monthly_fee"].astype(float)
    assert fee.min() >= 18 and fee.max() <= 120 and 55 < fee.mean() < 75  # real: 18.25..118.75, mean 64.8


def test_both_label_classes_and_labels_change_between_months(exports: Path):
    labels = [read(exports, m, "labels").set_index("user_id")["churn_label"] for m in range(2)]
    for month_labels in labels:
        rate = (month_labels == "True").mean()
        assert set(month_labels) == {"True", "False"} and 0.1 < rate < 0.5
    assert (labels[0] != labels[1]).mean() > 0.05


def test_as_of_manifest_names_each_folder(exports: Path):
    manifest = pd.read_csv(exports / "as_of.csv", dtype=str)
    assert manifest.to_dict("records") == [
        {"folder": "month_000", "as_of": "2024-01-31"},
        {"folder": "month_001", "as_of": "2024-02-29"},
        {"folder": "month_002", "as_of": "2024-03-31"},
    ]


def test_refuses_empty_sizes(tmp_path: Path):
    with pytest.raises(ValueError):
        generate(tmp_path, users=0, months=1)
