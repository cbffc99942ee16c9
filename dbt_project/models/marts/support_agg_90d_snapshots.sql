{{ config(meta={'snapshot_source': 'stg_support_agg_90d'}) }}

-- Only the months whose load differs from what the mart holds (all on a first build);
-- see macros/monthly_snapshots.sql.
with support as (

    select * from {{ ref('stg_support_agg_90d') }}
    where {{ snapshot_months_filter() }}

),

final as (

    select
        user_id,
        as_of,
        {{ utc_midnight('as_of') }} as event_timestamp,
        loaded_at,
        support_tickets_90d,
        ticket_avg_resolution_hrs_90d

    from support

)

select * from final
