//! A [`PhotoFilter`] as SQL over `photos` (alias `p`): attribute conditions as jsonb
//! containment (`p.attributes @> ANY(…)`, served by the GIN index on `attributes`), added times
//! as a range on `p.added_at` (btree index). Values travel as parameters, never inside the SQL.

use postgres::types::ToSql;

use crate::filter::PhotoFilter;

/// SQL parameters a query is run with.
pub type Params = Vec<Box<dyn ToSql + Sync + Send>>;

/// Appends `AND …` conditions for `filter` to `sql`, numbering its parameters after those
/// already in `params`.
pub fn push_filter(filter: &PhotoFilter, sql: &mut String, params: &mut Params) {
    for c in &filter.conditions {
        let docs: Vec<String> = c
            .any_of
            .iter()
            .map(|v| {
                let one: serde_json::Map<String, serde_json::Value> = [(c.key.clone(), serde_json::Value::String(v.clone()))].into_iter().collect();
                serde_json::Value::Object(one).to_string()
            })
            .collect();
        params.push(Box::new(docs));
        sql.push_str(&format!(" AND p.attributes @> ANY(${}::text[]::jsonb[])", params.len()));
    }
    if let Some(ms) = filter.added_from_ms {
        params.push(Box::new(ms as f64 / 1000.0));
        sql.push_str(&format!(" AND p.added_at >= to_timestamp(${})", params.len()));
    }
    if let Some(ms) = filter.added_before_ms {
        params.push(Box::new(ms as f64 / 1000.0));
        sql.push_str(&format!(" AND p.added_at < to_timestamp(${})", params.len()));
    }
}

/// Borrowed parameters, as the driver takes them.
pub fn refs(params: &Params) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::Condition;

    #[test]
    fn conditions_number_their_parameters_after_the_callers() {
        let f = PhotoFilter {
            conditions: vec![Condition { key: "owner".into(), any_of: vec!["ana".into(), "o'brien".into()] }],
            added_from_ms: Some(1_000),
            added_before_ms: None,
        };
        let mut sql = String::from("SELECT 1 FROM photos p WHERE p.id = $1");
        let mut params: Params = vec![Box::new("x".to_string())];
        push_filter(&f, &mut sql, &mut params);
        assert_eq!(params.len(), 3);
        assert!(sql.ends_with("AND p.attributes @> ANY($2::text[]::jsonb[]) AND p.added_at >= to_timestamp($3)"), "{sql}");
        assert!(!sql.contains("ana") && !sql.contains("brien"), "values are parameters: {sql}");
    }
}
