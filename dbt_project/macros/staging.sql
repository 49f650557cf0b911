{#- Where a raw row came from, under the names staging uses. -#}
{% macro lineage_columns() -%}
        _source_file as source_file,
        _line_number as source_line,
        _loaded_at as loaded_at
{%- endmacro %}

{#- De-duplication rule of every staging model: per key, the latest load wins (and within one
    file, the later line: a re-sent record follows its original). -#}
{% macro keep_latest_record(key) -%}
qualify row_number() over (
    partition by {{ key }} order by loaded_at desc, source_file desc, source_line desc
) = 1
{%- endmacro %}

{#- The day a record arrived: the date in its landing file's name (ingestion only accepts files
    named <source>/<YYYY-MM-DD>.csv). -#}
{% macro landing_date(source_file) -%}
cast(regexp_extract({{ source_file }}, '(\d{4}-\d{2}-\d{2})\.csv$', 1) as date)
{%- endmacro %}
