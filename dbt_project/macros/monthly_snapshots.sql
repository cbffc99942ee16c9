{#-
  Versioned monthly snapshots: how the marts are kept up to date month by month.

  Every mart holds one row per (user_id, as_of) and is built from exactly one
  staging model, named in the mart's `meta.snapshot_source`. A month is the unit
  of work:

  * a month of the source whose loaded_at differs from the mart's (a new month,
    a late-arriving older month, or a re-delivered month) is (re)built: the
    model selects only those months (`snapshot_months_filter`) and the
    `replace_months` strategy deletes exactly those months from the mart and
    inserts the new rows, in one transaction;
  * a month present in the mart but no longer in the source is deleted;
  * every other month is never touched, and a second run changes nothing.

  Which months to build is decided from the months' loaded_at only (one value
  per ingested month, see docs/contracts.md), found with index probes: the raw
  tables' primary key and the marts' index both start with as_of, so deciding
  costs a few lookups per month, never a scan of history.
-#}


{#- The snapshot source relation of the model being run (meta.snapshot_source). -#}
{% macro snapshot_source_relation() -%}
    {%- set name = (config.get('meta') or {}).get('snapshot_source') -%}
    {%- if not name -%}
        {{ exceptions.raise_compiler_error(
            "model " ~ model.name ~ " uses monthly snapshots but has no meta.snapshot_source") }}
    {%- endif -%}
    {{ return(ref(name)) }}
{%- endmacro %}


{#- SQL: (as_of, loaded_at) of every month in `relation`, by index skip-scan. -#}
{% macro month_states_sql(relation) -%}
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
        (select r.loaded_at from {{ relation }} as r where r.as_of = months.as_of limit 1) as loaded_at
    from months
    where months.as_of is not null
{%- endmacro %}


{#- {'build': [months to (re)build], 'drop': [months no longer in the source]}
    comparing `source` with the existing `target`; ISO date strings, oldest first. -#}
{% macro snapshot_month_plan(source, target) -%}
    {%- set query -%}
        with source_months as ({{ month_states_sql(source) }}),
             target_months as ({{ month_states_sql(target) }})
        select
            coalesce(s.as_of, t.as_of)::text as as_of,
            case when s.as_of is null then 'drop' else 'build' end as action
        from source_months as s
        full outer join target_months as t on t.as_of = s.as_of
        where s.loaded_at is distinct from t.loaded_at
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


{#- A WHERE condition for the model's select: all months on a first or full
    build, else only the months whose loaded_at differs from the mart's. -#}
{% macro snapshot_months_filter(as_of_column='as_of') -%}
    {%- if execute and is_incremental() -%}
        {%- set plan = snapshot_month_plan(snapshot_source_relation(), this) -%}
        {%- if plan['build'] -%}
            {{ as_of_column }} in ({{ date_list_sql(plan['build']) }})
        {%- else -%}
            false /* every month is up to date */
        {%- endif -%}
    {%- else -%}
        true /* first or full build: every month */
    {%- endif -%}
{%- endmacro %}


{#- Incremental strategy `replace_months`: delete+insert per as_of. Deletes from
    the target every month present in the new rows (so a re-delivered month that
    lost users loses them here too) and every month no longer in the source,
    then inserts the new rows. Other months are not touched. -#}
{% macro get_incremental_replace_months_sql(arg_dict) -%}
    {%- set target = arg_dict['target_relation'] -%}
    {%- set temp = arg_dict['temp_relation'] -%}
    {%- set columns = get_quoted_csv(arg_dict['dest_columns'] | map(attribute='name')) -%}

    {%- set new_months = [] -%}
    {%- for row in run_query('select distinct as_of::text as as_of from ' ~ temp ~ ' order by 1').rows -%}
        {%- do new_months.append(row['as_of']) -%}
    {%- endfor -%}
    {%- set gone_months = snapshot_month_plan(snapshot_source_relation(), target)['drop'] -%}
    {%- set replaced = new_months + gone_months -%}
    {%- do log(target.identifier ~ ": months (re)built: " ~ (new_months | join(', ') or 'none')
               ~ "; months dropped: " ~ (gone_months | join(', ') or 'none'), info=True) -%}

    {%- if replaced %}
    delete from {{ target }}
    where as_of in ({{ date_list_sql(replaced) }});
    {% endif %}
    insert into {{ target }} ({{ columns }})
    select {{ columns }} from {{ temp }}
{%- endmacro %}
