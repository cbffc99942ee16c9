{#-
  Versioned monthly snapshots: how the marts are kept up to date month by month.

  Every mart holds one row per (user_id, as_of) and snapshots one staging model
  (its meta.snapshot_source). A month is the unit of work. raw.ingestion_log
  lists every loaded month with its loaded_at (written in the same transaction
  as the month's raw rows, which carry the same loaded_at); each mart row
  carries its month's loaded_at too. Comparing the two:

  * a month whose loaded_at differs from the mart's (a new month, a late-arriving
    older month, a re-delivered month) is (re)built: the model selects only those
    months (`snapshot_months_filter`) and the `replace_months` strategy deletes
    exactly those months from the mart and inserts the new rows, in one
    transaction (so a re-delivered month that lost users loses them here too);
  * a month in the mart but no longer loaded (gone from the log, or its raw
    rows gone from the staging source) is deleted;
  * every other month is never touched, and a second run changes nothing.

  Deciding costs a read of the (tiny) log and a few index probes per month in
  the mart (its (as_of, loaded_at) index), never a scan of history.
-#}


{#- The log of loaded months. Called unconditionally so that dbt records the
    dependency at parse time (lineage: raw.ingestion_log -> every mart). -#}
{% macro months_log_relation() -%}
    {{ return(source('raw', 'ingestion_log')) }}
{%- endmacro %}


{#- The staging model a mart snapshots, named in the mart's meta.snapshot_source. -#}
{% macro snapshot_source_relation() -%}
    {%- set name = (config.get('meta') or {}).get('snapshot_source') -%}
    {%- if not name -%}
        {{ exceptions.raise_compiler_error(
            "model " ~ model.name ~ " is a monthly snapshot but has no meta.snapshot_source") }}
    {%- endif -%}
    {{ return(ref(name)) }}
{%- endmacro %}


{#- SQL: (as_of, loaded_at) of every month present in the mart `relation`:
    index probes on its (as_of, loaded_at) index, a few per month. -#}
{% macro mart_month_states_sql(relation) -%}
    with recursive months as (
        (select as_of from {{ relation }} order by as_of limit 1)
        union all
        select (select r.as_of from {{ relation }} as r
                where r.as_of > months.as_of order by r.as_of limit 1)
        from months
        where months.as_of is not null
    )
    select
        months.as_of,
        (select max(r.loaded_at) from {{ relation }} as r where r.as_of = months.as_of) as loaded_at
    from months
    where months.as_of is not null
{%- endmacro %}


{#- {'build': [months to (re)build], 'drop': [months no longer loaded]} for the
    existing mart `target` built from `source`; ISO date strings, oldest first.
    A month is loaded when the log lists it and `source` has rows for it (one
    probe per month: the raw tables are partitioned, and indexed, by as_of). -#}
{% macro snapshot_month_plan(source, target) -%}
    {%- set query -%}
        with loaded as (
            select l.as_of, l.loaded_at
            from {{ months_log_relation() }} as l
            -- a scalar subquery, not EXISTS: the planner would turn EXISTS into a
            -- semi-join over all of history; this probes one partition per month
            where coalesce((select true from {{ source }} as s where s.as_of = l.as_of limit 1), false)
        ),
        in_mart as (
            {{ mart_month_states_sql(target) }}
        )
        select
            coalesce(l.as_of, m.as_of)::text as as_of,
            case when l.as_of is null then 'drop' else 'build' end as action
        from loaded as l
        full outer join in_mart as m on m.as_of = l.as_of
        where l.loaded_at is distinct from m.loaded_at
        order by 1
    {%- endset -%}
    {%- set plan = {'build': [], 'drop': []} -%}
    {%- for row in run_query(query).rows -%}
        {%- do plan[row['action']].append(row['as_of']) -%}
    {%- endfor -%}
    {{ return(plan) }}
{%- endmacro %}


{% macro date_list_sql(dates) -%}
    {%- for d in dates %}'{{ d }}'::date{{ ", " if not loop.last }}{% endfor -%}
{%- endmacro %}


{#- A WHERE condition for the model's select: every month on a first or full
    build, else only the months whose loaded_at differs from the mart's. -#}
{% macro snapshot_months_filter(as_of_column='as_of') -%}
    {%- set log_relation = months_log_relation() -%}
    {%- if execute and is_incremental() -%}
        {%- set plan = snapshot_month_plan(snapshot_source_relation(), this) -%}
        {%- if plan['build'] -%}
            {{ as_of_column }} in ({{ date_list_sql(plan['build']) }})
        {%- else -%}
            false /* every month is up to date */
        {%- endif -%}
    {%- else -%}
        {{ as_of_column }} in (select as_of from {{ log_relation }}) /* first or full build: every month */
    {%- endif -%}
{%- endmacro %}


{#- Incremental strategy `replace_months`: delete+insert per as_of. Deletes from
    the target every month present in the new rows (the months the model
    selected) and every month no longer loaded, then inserts the new rows.
    Other months are not touched. (Only the "no longer loaded" part is
    re-planned here: a month loaded after the model's select was planned is left
    for the next build rather than deleted without its replacement.) -#}
{% macro get_incremental_replace_months_sql(arg_dict) -%}
    {%- set target = arg_dict['target_relation'] -%}
    {%- set temp = arg_dict['temp_relation'] -%}
    {%- set columns = get_quoted_csv(arg_dict['dest_columns'] | map(attribute='name')) -%}

    {%- set rebuilt = [] -%}
    {%- for row in run_query('select distinct as_of::text as as_of from ' ~ temp ~ ' order by 1').rows -%}
        {%- do rebuilt.append(row['as_of']) -%}
    {%- endfor -%}
    {%- set dropped = snapshot_month_plan(snapshot_source_relation(), target)['drop'] -%}
    {%- set replaced = (rebuilt + dropped) | unique | sort | list -%}
    {%- do log(target.identifier ~ ": months (re)built: " ~ (rebuilt | join(', ') or 'none')
               ~ "; months dropped: " ~ (dropped | join(', ') or 'none'), info=True) -%}

    {%- if replaced %}
    delete from {{ target }}
    where as_of in ({{ date_list_sql(replaced) }});
    {% endif %}
    insert into {{ target }} ({{ columns }})
    select {{ columns }} from {{ temp }}
{%- endmacro %}
