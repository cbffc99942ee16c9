"""The declared layout of a monthly export and of the ``raw`` schema it lands in.

Types are declared here, never inferred from a month's data: an all-empty
column one month must not change a table's type. The loader validates every
cell against these kinds before a single row reaches PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass

RAW_SCHEMA = "raw"

# What a cell of each kind may hold; the PostgreSQL type it is stored as.
PG_TYPES = {
    "text": "text",
    "int": "integer",
    "float": "double precision",
    "numeric": "numeric",
    "bool": "boolean",
    "date": "date",
}

# What a user_id may be, end to end: the loader refuses any other id (naming its line), and
# the API answers 422 for one, so every loaded user can be served. The real exports' ids
# ("7590-VHVEG") match. An RE2 pattern (the loader matches it with Arrow) and a Python one.
USER_ID_MAX_LENGTH = 64
USER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$"

# Accepted boolean spellings (case-insensitive). An empty cell is NULL, never False.
TRUE_WORDS = frozenset({"true", "t", "1", "yes", "y"})
FALSE_WORDS = frozenset({"false", "f", "0", "no", "n"})


@dataclass(frozen=True)
class Column:
    name: str
    kind: str
    nullable: bool = True

    @property
    def pg_type(self) -> str:
        return PG_TYPES[self.kind]


@dataclass(frozen=True)
class ExportFile:
    name: str  # file stem == raw table name
    columns: tuple[Column, ...]

    @property
    def filename(self) -> str:
        return f"{self.name}.csv"

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


USER_ID = Column("user_id", "text", nullable=False)

EXPORT_FILES: tuple[ExportFile, ...] = (
    ExportFile("users", (
        USER_ID,
        Column("signup_date", "date"),
        Column("user_gender", "text"),
        Column("user_is_senior", "bool"),
        Column("has_family", "bool"),
        Column("has_dependents", "bool"),
    )),
    ExportFile("subscriptions", (
        USER_ID,
        Column("months_active", "int"),
        Column("plan_stream_tv", "bool"),
        Column("plan_stream_movies", "bool"),
        Column("contract_type", "text"),
        Column("paperless_billing", "bool"),
        Column("monthly_fee", "numeric"),
        Column("total_paid", "numeric"),
        Column("net_service", "text"),
    )),
    ExportFile("usage_agg_30d", (
        USER_ID,
        Column("watch_hours_30d", "float"),
        Column("avg_session_mins_7d", "float"),
        Column("unique_devices_30d", "int"),
        Column("skips_7d", "int"),
        Column("rebuffer_events_7d", "int"),
    )),
    ExportFile("payments_agg_90d", (
        USER_ID,
        Column("failed_payments_90d", "int"),
    )),
    ExportFile("support_agg_90d", (
        USER_ID,
        Column("support_tickets_90d", "int"),
        Column("ticket_avg_resolution_hrs_90d", "numeric"),
    )),
    ExportFile("labels", (
        USER_ID,
        Column("churn_label", "bool"),
    )),
)

EXPORTS_BY_NAME = {f.name: f for f in EXPORT_FILES}
# users.csv is the month's roster: every other file's user_id must appear in it.
ROSTER = "users"


def create_table_sql(export: ExportFile) -> str:
    """DDL of one raw table: the export's columns plus as_of and loaded_at.

    Partitioned by month: a month is loaded into a fresh table (indexed after the
    COPY, which is several times faster than maintaining the index row by row)
    that then replaces that month's partition, leaving every other month alone.
    """
    cols = ",\n    ".join(
        f"{c.name} {c.pg_type}{'' if c.nullable else ' not null'}" for c in export.columns
    )
    return (
        f"create table if not exists {RAW_SCHEMA}.{export.name} (\n"
        f"    as_of date not null,\n"
        f"    loaded_at timestamptz not null,\n"
        f"    {cols},\n"
        f"    primary key (as_of, user_id)\n"
        f") partition by list (as_of)"
    )


def partition_name(export: ExportFile, as_of) -> str:
    return f"{export.name}_m{as_of:%Y%m%d}"


INGESTION_LOG_SQL = f"""
create table if not exists {RAW_SCHEMA}.ingestion_log (
    as_of date primary key,
    source_dir text not null,
    loaded_at timestamptz not null,
    row_counts jsonb not null,
    file_sha256 jsonb not null
)"""
