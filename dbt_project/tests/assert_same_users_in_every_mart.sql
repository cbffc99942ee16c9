-- For every as_of, every mart holds exactly the users of user_profile_snapshots:
-- returns each (mart, user_id, as_of) present on one side only.
{% set marts = [
    'subscriptions_profile_snapshots',
    'usage_agg_30d_snapshots',
    'payments_agg_90d_snapshots',
    'support_agg_90d_snapshots',
    'labels_snapshots',
] %}
{% for mart in marts %}
select
    '{{ mart }}' as mart,
    coalesce(u.user_id, m.user_id) as user_id,
    coalesce(u.as_of, m.as_of) as as_of,
    case when m.user_id is null then 'missing from the mart'
         else 'missing from user_profile_snapshots' end as problem
from {{ ref('user_profile_snapshots') }} as u
full outer join {{ ref(mart) }} as m
    on m.user_id = u.user_id and m.as_of = u.as_of
where u.user_id is null or m.user_id is null
{{ "union all" if not loop.last }}
{% endfor %}
