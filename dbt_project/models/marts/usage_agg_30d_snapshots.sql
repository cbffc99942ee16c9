{{ config(meta={'snapshot_source': 'stg_usage_agg_30d'}) }}

-- Only the months whose load differs from what the mart holds (all on a first build);
-- see macros/monthly_snapshots.sql.
with usage as (

    select * from {{ ref('stg_usage_agg_30d') }}
    where {{ snapshot_months_filter() }}

),

final as (

    select
        user_id,
        as_of,
        {{ utc_midnight('as_of') }} as event_timestamp,
        loaded_at,
        watch_hours_30d,
        avg_session_mins_7d,
        unique_devices_30d,
        skips_7d,
        rebuffer_events_7d

    from usage

)

select * from final
