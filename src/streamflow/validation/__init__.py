"""Great Expectations gate on the dbt marts.

``validate`` runs the suites (and imports GX, ~3 s); ``validated_months`` and
``require_validated`` are what downstream steps call before using a month: plain
SQL on ``quality.validation_results``, so they stay cheap and GX-free.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

from streamflow.validation.gate import require_validated, validated_months

if TYPE_CHECKING:
    from streamflow.settings import Settings

__all__ = ["validate", "validated_months", "require_validated"]


def validate(settings: Settings, as_of: date | None = None, **kwargs) -> bool:
    """Validate one month (default: every month present); True when nothing blocks."""
    from streamflow.validation.runner import validate as run

    return run(settings, as_of=as_of, **kwargs)
