with source as (

    select * from {{ source('raw', 'subscriptions') }}

),

renamed as (

    select
        {{ clean_text('user_id') }} as user_id,
        as_of::date as as_of,
        loaded_at::timestamptz as loaded_at,
        months_active::integer as months_active,
        plan_stream_tv::boolean as plan_stream_tv,
        plan_stream_movies::boolean as plan_stream_movies,
        {{ clean_text('contract_type') }} as contract_type,
        paperless_billing::boolean as paperless_billing,
        monthly_fee::numeric(10, 2) as monthly_fee,
        total_paid::numeric(12, 2) as total_paid,
        {{ clean_text('net_service') }} as net_service

    from source

)

select * from renamed
