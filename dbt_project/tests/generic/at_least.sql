{#- Every non-NULL value of the column is >= min_value (> min_value when strict). -#}
{% test at_least(model, column_name, min_value, strict=false) %}
select {{ column_name }}
from {{ model }}
where {{ column_name }} {{ "<=" if strict else "<" }} {{ min_value }}
{% endtest %}
