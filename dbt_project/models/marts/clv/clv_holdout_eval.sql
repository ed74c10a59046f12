-- One row per calibration frequency bucket (0 to 6, 7+) and the total `all`: predicted
-- against actual repeat purchase days in the holdout.
with

holdout_eval as (

    select * from {{ ref('stg_clv__holdout_eval') }}

),

final as (

    select * from holdout_eval

)

select * from final
