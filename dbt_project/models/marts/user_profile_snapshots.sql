{{ config(meta={'snapshot_source': 'stg_users'}) }}

-- Only the months whose load differs from what the mart holds (all on a first build);
-- see macros/monthly_snapshots.sql.
with users as (

    select * from {{ ref('stg_users') }}
    where {{ snapshot_months_filter() }}

),

final as (

    select
        user_id,
        as_of,
        {{ utc_midnight('as_of') }} as event_timestamp,
        loaded_at,
        signup_date,
        user_gender,
        user_is_senior,
        has_family,
        has_dependents

    from users

)

select * from final
