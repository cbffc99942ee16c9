with source as (

    select * from {{ source('raw', 'labels') }}

),

renamed as (

    select
        {{ clean_text('user_id') }} as user_id,
        as_of::date as as_of,
        loaded_at::timestamptz as loaded_at,
        churn_label::boolean as churn_label

    from source

)

select * from renamed
