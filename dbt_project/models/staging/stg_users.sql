with source as (

    select * from {{ source('raw', 'users') }}

),

renamed as (

    select
        {{ clean_text('user_id') }} as user_id,
        as_of::date as as_of,
        loaded_at::timestamptz as loaded_at,
        signup_date::date as signup_date,
        {{ clean_text('user_gender') }} as user_gender,
        user_is_senior::boolean as user_is_senior,
        has_family::boolean as has_family,
        has_dependents::boolean as has_dependents

    from source

)

select * from renamed
