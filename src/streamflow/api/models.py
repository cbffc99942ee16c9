"""Request and response shapes: what /docs shows (responses are built as JSON directly)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from streamflow.raw_schema import USER_ID_MAX_LENGTH, USER_ID_PATTERN

MAX_BATCH = 1000

UserId = Annotated[str, StringConstraints(pattern=USER_ID_PATTERN, max_length=USER_ID_MAX_LENGTH)]

EXAMPLE_FEATURES = {
    "months_active": 1, "plan_stream_tv": False, "plan_stream_movies": False,
    "contract_type": "Month-to-month", "paperless_billing": True, "monthly_fee": 29.85,
    "total_paid": 29.85, "net_service": "DSL", "watch_hours_30d": 24.21779534835315,
    "avg_session_mins_7d": 29.14104464084511, "unique_devices_30d": 3, "skips_7d": 4,
    "rebuffer_events_7d": 1, "failed_payments_90d": 1, "support_tickets_90d": 0,
    "ticket_avg_resolution_hrs_90d": 16.0, "signup_date": "2022-02-05T00:00:00Z",
    "user_gender": "Female", "user_is_senior": False, "has_family": True, "has_dependents": False,
}
EXAMPLE_VIEWS = {
    v: {"as_of": "2024-02-29", "event_timestamp": "2024-02-29T00:00:00Z", "status": "PRESENT",
        "latest": True, "ttl_seconds": 2678400.0}
    for v in ("subs_profile_fv", "usage_agg_30d_fv", "payments_agg_90d_fv", "support_agg_90d_fv",
              "user_profile_fv")
}
EXAMPLE_RESULT = {
    "user_id": "7590-VHVEG", "found": True, "feature_service": "churn_model_v1",
    "features": EXAMPLE_FEATURES, "status": dict.fromkeys(EXAMPLE_FEATURES, "PRESENT"),
    "views": EXAMPLE_VIEWS, "missing": [], "stale": [], "not_latest": [], "reference_as_of": "2024-02-29",
}


class ViewInfo(BaseModel):
    as_of: str | None = Field(description="The snapshot (month-end date) the view's values come from; "
                                          "null when the user has no row in the view")
    event_timestamp: str | None = Field(description="The view's event time for this user (UTC)")
    status: str = Field(description="PRESENT, NOT_FOUND, or OUTSIDE_MAX_AGE (older than the view's "
                                    "TTL relative to reference_as_of)")
    latest: bool = Field(description="True when the values come from the newest materialized snapshot "
                                     "(as_of == reference_as_of)")
    ttl_seconds: float | None = Field(description="The view's TTL in the registry; null: none")


class UserFeatures(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": EXAMPLE_RESULT})

    user_id: str
    found: bool = Field(description="False when the user has no row in any requested view "
                                    "(GET answers 404 instead)")
    feature_service: str | None = Field(description="The feature service read; null for an explicit "
                                                    "feature list")
    features: dict[str, Any] = Field(description="Feature name -> value, typed as in the contracts "
                                                 "(ints are ints, NULL is null, never NaN)")
    status: dict[str, str] = Field(description="Feature name -> PRESENT | NULL_VALUE | NOT_FOUND | "
                                               "OUTSIDE_MAX_AGE")
    views: dict[str, ViewInfo] = Field(description="Feature view -> where its values come from")
    missing: list[str] = Field(description="Features the user has no row for (value null)")
    stale: list[str] = Field(description="Features older than their view's TTL relative to "
                                         "reference_as_of: null unless include_stale=true")
    not_latest: list[str] = Field(description="Features whose value is within its TTL but comes from "
                                              "a snapshot older than reference_as_of (the user is absent "
                                              "from the newest month in that view)")
    reference_as_of: str | None = Field(description="The newest materialized snapshot: what "
                                                    "staleness is measured against")


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "example": {"user_ids": ["7590-VHVEG", "5575-GNVDE"]}})

    user_ids: list[UserId] = Field(min_length=1, max_length=MAX_BATCH,
                                   description=f"1 to {MAX_BATCH} user ids; results come back in "
                                               "this order (duplicates allowed)")
    feature_service: str | None = Field(default=None, description="Default churn_model_v1")
    features: list[str] | None = Field(default=None, description="Explicit feature references "
                                       "(view:feature, or a bare feature name), instead of a service")
    include_stale: bool = Field(default=False, description="Return values older than their TTL "
                                                           "(still marked OUTSIDE_MAX_AGE)")


class BatchResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {
        "feature_service": "churn_model_v1", "count": 1, "results": [EXAMPLE_RESULT]}})

    feature_service: str | None
    count: int
    results: list[UserFeatures]


class ErrorBody(BaseModel):
    detail: Any = Field(description="What went wrong")


class ReadyBody(BaseModel):
    status: str
    detail: str | None = None
    checks: dict[str, Any] = {}
