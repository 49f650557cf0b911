{#- Fails for rows where the column is earlier than another column of the same row
    (e.g. a default label observed before its application was made). -#}
{% test not_before(model, column_name, other_column) %}
select {{ column_name }}, {{ other_column }}
from {{ model }}
where {{ column_name }} < {{ other_column }}
{% endtest %}
