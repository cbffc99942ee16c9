{#- Cleaning helpers shared by the staging models. -#}

{#- Text: surrounding whitespace trimmed, empty string -> NULL. -#}
{% macro clean_text(column) -%}
    nullif(btrim({{ column }}), '')::text
{%- endmacro %}

{#- The instant `date_column` 00:00 UTC as a timestamptz, whatever the session
    time zone: date -> timestamp is zone-free, and `at time zone 'UTC'` then reads
    that wall-clock time as UTC. (A plain date::timestamptz would use the
    session's zone: 05:00 UTC under America/New_York.) -#}
{% macro utc_midnight(date_column) -%}
    ({{ date_column }}::timestamp at time zone 'UTC')
{%- endmacro %}
