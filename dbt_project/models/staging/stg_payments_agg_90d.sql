with source as (

    select * from {{ source('raw', 'payments_agg_90d') }}

),

renamed as (

    select
        {{ clean_text('user_id') }} as user_id,
        as_of::date as as_of,
        loaded_at::timestamptz as loaded_at,
        failed_payments_90d::integer as failed_payments_90d

    from source

)

select * from renamed
