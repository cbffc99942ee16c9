"""StreamFlow Features: monthly exports -> PostgreSQL -> dbt -> Great Expectations -> Feast -> API."""

__version__ = "0.1.0"
