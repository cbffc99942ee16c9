with source as (

    select * from {{ source('raw', 'usage_agg_30d') }}

),

renamed as (

    select
        {{ clean_text('user_id') }} as user_id,
        as_of::date as as_of,
        loaded_at::timestamptz as loaded_at,
        watch_hours_30d::double precision as watch_hours_30d,
        avg_session_mins_7d::double precision as avg_session_mins_7d,
        unique_devices_30d::integer as unique_devices_30d,
        skips_7d::integer as skips_7d,
        rebuffer_events_7d::integer as rebuffer_events_7d

    from source

)

select * from renamed
