//! YAML documents (jobs, LAVA test definitions) read into the same tree as JSON ones, so
//! that one validator serves both.
//!
//! The parser is `yaml-rust2`: maintained, pure Rust (the tools are also built static for
//! musl), YAML 1.2. `serde_yaml` is deprecated; we need no serde mapping here, only the tree.

use serde_json::{Map, Number, Value};
use yaml_rust2::{Yaml, YamlLoader};

/// The first document of `text` as a JSON value; errors say where.
pub fn parse(text: &str) -> Result<Value, String> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| e.to_string())?;
    match docs.into_iter().next() {
        None => Err("the document is empty".into()),
        Some(doc) => to_json(doc),
    }
}

fn to_json(y: Yaml) -> Result<Value, String> {
    Ok(match y {
        Yaml::Null | Yaml::BadValue => Value::Null,
        Yaml::Boolean(b) => Value::Bool(b),
        Yaml::Integer(i) => Value::Number(i.into()),
        Yaml::Real(text) => text
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map_or(Value::String(text), Value::Number),
        Yaml::String(s) => Value::String(s),
        Yaml::Array(items) => {
            Value::Array(items.into_iter().map(to_json).collect::<Result<_, _>>()?)
        }
        Yaml::Hash(hash) => {
            let mut map = Map::new();
            for (k, v) in hash {
                let key = match k {
                    Yaml::String(s) => s,
                    Yaml::Integer(i) => i.to_string(),
                    Yaml::Boolean(b) => b.to_string(),
                    Yaml::Real(r) => r,
                    other => return Err(format!("a mapping key must be a scalar, not {other:?}")),
                };
                map.insert(key, to_json(v)?);
            }
            Value::Object(map)
        }
        Yaml::Alias(_) => return Err("YAML aliases are not supported".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn documents_become_json() {
        let text = "metadata:\n  name: smoke\nrun:\n  steps:\n    - echo one\n    - 'lava-test-case a --result pass'\nparams:\n  N: 3\n  X: 1.5\n  ON: true\n  E:\n";
        assert_eq!(
            parse(text).unwrap(),
            json!({"metadata": {"name": "smoke"},
                   "run": {"steps": ["echo one", "lava-test-case a --result pass"]},
                   "params": {"N": 3, "X": 1.5, "ON": true, "E": null}})
        );
        assert!(parse("a: [").is_err());
        assert!(parse("").is_err());
    }
}
