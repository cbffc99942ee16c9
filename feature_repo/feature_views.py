"""Feature views over the monthly snapshot marts.

Field names and types follow the dbt contract (docs/contracts.md), typed the way
Feast itself maps PostgreSQL types: integer -> Int32, double precision and numeric
-> Float64, text -> String, boolean -> Bool, date -> UnixTimestamp.
test_feature_views_match_the_dbt_contract (tests/test_features.py) fails when a field
and the contract disagree.

TTL rule: a monthly snapshot (as_of = a month-end, event_timestamp = that day
00:00 UTC) must keep serving until the next month-end snapshot, which comes 28 to
31 days later, and must not serve past it. The TTL is therefore the longest gap
between consecutive month-ends, 31 days: a snapshot always covers the wait for
the next one, and a user missing from the next snapshot lapses at most 3 days
after it (never serving a two-snapshots-old value, which would be >= 59 days old).
"""

from datetime import timedelta

from data_sources import (
    payments_agg_90d_source,
    subscriptions_profile_source,
    support_agg_90d_source,
    usage_agg_30d_source,
    user_profile_source,
)
from entities import OWNER, user
from feast import FeatureView, Field
from feast.types import Bool, Float64, Int32, String, UnixTimestamp

MONTHLY_SNAPSHOT_TTL = timedelta(days=31)
TAGS = {"team": "churn", "refresh": "monthly", "source": "dbt"}


def monthly_snapshot_view(name: str, description: str, source, kind: str, schema: list[Field]) -> FeatureView:
    """A feature view over one monthly snapshot mart: entity user, the monthly TTL, online."""
    return FeatureView(
        name=name,
        description=description,
        entities=[user],
        ttl=MONTHLY_SNAPSHOT_TTL,
        schema=schema,
        online=True,
        source=source,
        owner=OWNER,
        tags={**TAGS, "kind": kind},
    )


user_profile_fv = monthly_snapshot_view(
    "user_profile_fv",
    "Who the user is: signup date, gender, senior, family and dependents flags.",
    user_profile_source, "profile",
    [
        Field(name="signup_date", dtype=UnixTimestamp),
        Field(name="user_gender", dtype=String),
        Field(name="user_is_senior", dtype=Bool),
        Field(name="has_family", dtype=Bool),
        Field(name="has_dependents", dtype=Bool),
    ],
)

subs_profile_fv = monthly_snapshot_view(
    "subs_profile_fv",
    "Subscription: tenure, plan options, contract type, billing, fees paid, internet service.",
    subscriptions_profile_source, "subscription",
    [
        Field(name="months_active", dtype=Int32),
        Field(name="plan_stream_tv", dtype=Bool),
        Field(name="plan_stream_movies", dtype=Bool),
        Field(name="contract_type", dtype=String),
        Field(name="paperless_billing", dtype=Bool),
        Field(name="monthly_fee", dtype=Float64),
        Field(name="total_paid", dtype=Float64),
        Field(name="net_service", dtype=String),
    ],
)

usage_agg_30d_fv = monthly_snapshot_view(
    "usage_agg_30d_fv",
    "Viewing usage: watch hours (30 d), session length, devices, skips and rebuffers (7 d).",
    usage_agg_30d_source, "usage",
    [
        Field(name="watch_hours_30d", dtype=Float64),
        Field(name="avg_session_mins_7d", dtype=Float64),
        Field(name="unique_devices_30d", dtype=Int32),
        Field(name="skips_7d", dtype=Int32),
        Field(name="rebuffer_events_7d", dtype=Int32),
    ],
)

payments_agg_90d_fv = monthly_snapshot_view(
    "payments_agg_90d_fv",
    "Failed payments over the last 90 days.",
    payments_agg_90d_source, "payments",
    [Field(name="failed_payments_90d", dtype=Int32)],
)

support_agg_90d_fv = monthly_snapshot_view(
    "support_agg_90d_fv",
    "Support tickets and their average resolution time over the last 90 days.",
    support_agg_90d_source, "support",
    [
        Field(name="support_tickets_90d", dtype=Int32),
        Field(name="ticket_avg_resolution_hrs_90d", dtype=Float64),
    ],
)
