{#- Every row's `columns` combination exists in `to` (a composite foreign key):
    e.g. every mart row's (user_id, as_of) has a user snapshot of the same month. -#}
{% test composite_relationship(model, to, columns) %}
select {% for c in columns %}child.{{ c }}{{ ", " if not loop.last }}{% endfor %}
from {{ model }} as child
where not exists (
    select 1
    from {{ to }} as parent
    where {% for c in columns %}parent.{{ c }} = child.{{ c }}{{ " and " if not loop.last }}{% endfor %}
)
{% endtest %}
