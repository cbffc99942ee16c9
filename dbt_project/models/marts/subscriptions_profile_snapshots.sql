{{ config(meta={'snapshot_source': 'stg_subscriptions'}) }}

-- Only the months whose load differs from what the mart holds (all on a first build);
-- see macros/monthly_snapshots.sql.
with subscriptions as (

    select * from {{ ref('stg_subscriptions') }}
    where {{ snapshot_months_filter() }}

),

final as (

    select
        user_id,
        as_of,
        {{ utc_midnight('as_of') }} as event_timestamp,
        loaded_at,
        months_active,
        plan_stream_tv,
        plan_stream_movies,
        contract_type,
        paperless_billing,
        monthly_fee,
        total_paid,
        net_service

    from subscriptions

)

select * from final
