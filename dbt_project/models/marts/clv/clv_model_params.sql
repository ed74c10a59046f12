-- One row per model and parameter of the published fits (SPEC contract columns first).
with

model_params as (

    select * from {{ ref('stg_clv__model_params') }}

),

final as (

    select * from model_params

)

select * from final
