{#- Feeds mix date formats; the accepted ones are the var timestamp_formats (dbt_project.yml),
    which the Python ingestion reads too. -#}
{% macro parse_timestamp(column) -%}
    try_strptime(trim({{ column }}), [
        {%- for fmt in var('timestamp_formats') %}'{{ fmt }}'{{ ", " if not loop.last }}{% endfor -%}
    ])
{%- endmacro %}

{% macro parse_date(column) -%}
    cast({{ parse_timestamp(column) }} as date)
{%- endmacro %}

{#- Lower-case, trimmed text with inner runs of spaces folded; empty becomes null. -#}
{% macro clean_text(column) -%}
    nullif(lower(regexp_replace(trim({{ column }}), '\s+', ' ', 'g')), '')
{%- endmacro %}

{#- Title Case per word ("new york" -> "New York"); DuckDB has no initcap. -#}
{% macro title_case(expression) -%}
    array_to_string(list_transform(string_split({{ expression }}, ' '),
        lambda w: upper(left(w, 1)) || substr(w, 2)), ' ')
{%- endmacro %}
