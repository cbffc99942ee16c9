{{ config(meta={'snapshot_source': 'stg_labels'}) }}

-- Only the months whose load differs from what the mart holds (all on a first build);
-- see macros/monthly_snapshots.sql.
with labels as (

    select * from {{ ref('stg_labels') }}
    where {{ snapshot_months_filter() }}

),

final as (

    select
        user_id,
        as_of,
        {{ utc_midnight('as_of') }} as event_timestamp,
        loaded_at,
        churn_label

    from labels

)

select * from final
