"""Feature services: the versioned feature sets models are trained and served with.

A model version pins its service: change the features of a deployed model by
adding churn_model_v2, never by editing v1 (training and serving must agree).
"""

from entities import OWNER
from feast import FeatureService
from feature_views import (
    payments_agg_90d_fv,
    subs_profile_fv,
    support_agg_90d_fv,
    usage_agg_30d_fv,
    user_profile_fv,
)

churn_model_v1 = FeatureService(
    name="churn_model_v1",
    features=[user_profile_fv, subs_profile_fv, usage_agg_30d_fv, payments_agg_90d_fv, support_agg_90d_fv],
    description="Features of churn model v1: used for its training set and for online serving.",
    owner=OWNER,
    tags={"model": "churn", "model_version": "1", "team": "churn"},
)
