{{ config(meta={'snapshot_source': 'stg_payments_agg_90d'}) }}

-- Only the months whose load differs from what the mart holds (all on a first build);
-- see macros/monthly_snapshots.sql.
with payments as (

    select * from {{ ref('stg_payments_agg_90d') }}
    where {{ snapshot_months_filter() }}

),

final as (

    select
        user_id,
        as_of,
        {{ utc_midnight('as_of') }} as event_timestamp,
        loaded_at,
        failed_payments_90d

    from payments

)

select * from final
