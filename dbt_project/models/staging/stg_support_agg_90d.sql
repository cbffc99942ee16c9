with source as (

    select * from {{ source('raw', 'support_agg_90d') }}

),

renamed as (

    select
        {{ clean_text('user_id') }} as user_id,
        as_of::date as as_of,
        loaded_at::timestamptz as loaded_at,
        support_tickets_90d::integer as support_tickets_90d,
        ticket_avg_resolution_hrs_90d::numeric(10, 2) as ticket_avg_resolution_hrs_90d

    from source

)

select * from renamed
