{#- The column is NULL exactly on the rows where `condition` is true
    (a NULL condition counts as false). -#}
{% test null_exactly_when(model, column_name, condition) %}
select *
from {{ model }}
where ({{ column_name }} is null) <> coalesce(({{ condition }}), false)
{% endtest %}
