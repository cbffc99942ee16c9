"""The Feast layer: feature repository in ``feature_repo/``, and the steps run on it.

``store.apply`` registers the definitions, ``training.build_training_set`` builds the
point-in-time training set, ``materialize.materialize`` loads the online store and
``skew.check_skew`` compares the two. Importing this package does not import Feast.
"""

PROJECT = "streamflow"
FEATURE_SERVICE = "churn_model_v1"
ENTITY_JOIN_KEY = "user_id"
# Schema of the online tables (and of the offline store's scratch tables).
FEAST_SCHEMA = "feast"
