"""One PostgreSQL source per dbt mart.

The relation (schema and table) of every mart is read from dbt's manifest
(streamflow.features.manifest), so a schema or alias change in dbt cannot leave
Feast reading the old table: the next `apply` follows it.

Every mart has `event_timestamp` (timestamptz, the as_of at 00:00 UTC) and
`loaded_at` (when the month was loaded). Feast's point-in-time join uses the
first, and the second breaks ties when a month is re-loaded. A timestamptz
(never the DATE as_of) keeps the join independent of the session time zone.
"""

from entities import OWNER
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import PostgreSQLSource

from streamflow.features.manifest import mart_relation

TIMESTAMP_FIELD = "event_timestamp"
CREATED_TIMESTAMP = "loaded_at"


# Where a mart's column type is not one Feast carries faithfully, the source selects it
# cast to the feature's type:
# - DATE: Feast's arrow conversion wants a timestamp and fails on datetime.date, so
#   signup_date is exposed as its UTC-midnight instant (UnixTimestamp);
# - numeric: Feast converts Decimal through arrow's decimal->double cast, which is not
#   correctly rounded (593.30 -> 593.3000000000001); PostgreSQL's ::float8 is.
def _mart_source(model: str, description: str, select: str | None = None) -> PostgreSQLSource:
    relation = mart_relation(model)
    common = dict(
        name=model, timestamp_field=TIMESTAMP_FIELD, created_timestamp_column=CREATED_TIMESTAMP,
        description=description, owner=OWNER,
        tags={"dbt_model": model, "dbt_relation": f"{relation.schema}.{relation.identifier}",
              "grain": "monthly"})
    if select is None:
        return PostgreSQLSource(table=relation.sql, **common)
    return PostgreSQLSource(query=f"select {select} from {relation.sql}", **common)


user_profile_source = _mart_source(
    "user_profile_snapshots", "Monthly snapshot of each user's profile (users export).",
    select="user_id, as_of, event_timestamp, loaded_at, "
           "(signup_date::timestamp at time zone 'UTC') as signup_date, "
           "user_gender, user_is_senior, has_family, has_dependents")
subscriptions_profile_source = _mart_source(
    "subscriptions_profile_snapshots", "Monthly snapshot of each user's subscription and billing.",
    select="user_id, as_of, event_timestamp, loaded_at, months_active, plan_stream_tv, plan_stream_movies, "
           "contract_type, paperless_billing, monthly_fee::float8 as monthly_fee, "
           "total_paid::float8 as total_paid, net_service")
usage_agg_30d_source = _mart_source(
    "usage_agg_30d_snapshots", "Monthly snapshot of viewing usage over the last 30 / 7 days.")
payments_agg_90d_source = _mart_source(
    "payments_agg_90d_snapshots", "Monthly snapshot of payment failures over the last 90 days.")
support_agg_90d_source = _mart_source(
    "support_agg_90d_snapshots", "Monthly snapshot of support tickets over the last 90 days.",
    select="user_id, as_of, event_timestamp, loaded_at, support_tickets_90d, "
           "ticket_avg_resolution_hrs_90d::float8 as ticket_avg_resolution_hrs_90d")
