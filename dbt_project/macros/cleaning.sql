{#- Feeds mix date formats; these are the ones accepted, day-first for slashed dates. -#}
{% macro parse_timestamp(column) -%}
    try_strptime(trim({{ column }}), [
        '%Y-%m-%d %H:%M:%S', '%Y-%m-%dT%H:%M:%SZ', '%Y-%m-%dT%H:%M:%S',
        '%d/%m/%Y %H:%M:%S', '%d/%m/%Y %H:%M', '%Y-%m-%d', '%d/%m/%Y'
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
