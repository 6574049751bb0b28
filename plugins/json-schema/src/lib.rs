//! A JSON-schema validator: a node's data must be JSON that matches the
//! schema held by its parent's `.schema` child.
//!
//! Bind it to a subtree (`corral plugin deploy schemas json_schema.wasm
//! --bind /config`), then write a schema to `/config/.schema`: from then on
//! every write of a child of `/config` is checked, in the log, on every
//! replica, and a write that does not match is refused with the reason.
//! Writes to a `.schema` node are checked too: it must be a schema this
//! validator understands.
//!
//! Supported keywords (JSON Schema draft 2020-12 semantics): `type`, `enum`,
//! `const`, `properties`, `required`, `additionalProperties`, `items`,
//! `minItems`, `maxItems`, `minimum`, `maximum`, `exclusiveMinimum`,
//! `exclusiveMaximum`, `minLength`, `maxLength`, `allOf`, `anyOf`, `not`,
//! and the annotations `$schema`, `$id`, `$comment`, `title`,
//! `description`, `default`, `examples`. Any other keyword makes the schema
//! invalid rather than silently unchecked.

use corral_sdk::{Change, ChangeKind, Context, Read, Validator, parent};
use serde_json::{Map, Value};

pub struct JsonSchema;

const SCHEMA: &str = ".schema";

impl Validator for JsonSchema {
    fn validate(_ctx: &Context, tree: &impl Read, changes: &[Change]) -> Result<(), String> {
        for c in changes {
            let Some(data) = &c.data else { continue };
            if c.kind == ChangeKind::Deleted {
                continue;
            }
            if c.path.rsplit('/').next() == Some(SCHEMA) {
                let schema: Value = serde_json::from_slice(data).map_err(|e| format!("{}: not JSON: {e}", c.path))?;
                check_schema(&schema).map_err(|e| format!("{}: {e}", c.path))?;
                continue;
            }
            let dir = parent(&c.path);
            let schema_path = if dir == "/" { format!("/{SCHEMA}") } else { format!("{dir}/{SCHEMA}") };
            let Some((schema, _)) = tree.get(&schema_path).map_err(|f| f.to_string())? else { continue };
            let schema: Value = serde_json::from_slice(&schema).map_err(|e| format!("{schema_path}: not JSON: {e}"))?;
            let value: Value = serde_json::from_slice(data).map_err(|e| format!("{}: not JSON: {e}", c.path))?;
            validate(&schema, &value, "").map_err(|e| format!("{} does not match {schema_path}: {e}", c.path))?;
        }
        Ok(())
    }
}

corral_sdk::export_validator!(JsonSchema);

const ANNOTATIONS: [&str; 7] = ["$schema", "$id", "$comment", "title", "description", "default", "examples"];
const KEYWORDS: [&str; 18] = [
    "type",
    "enum",
    "const",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "allOf",
    "anyOf",
    "not",
];

/// Refuses schemas with keywords this validator does not check.
pub fn check_schema(schema: &Value) -> Result<(), String> {
    let obj = match schema {
        Value::Bool(_) => return Ok(()),
        Value::Object(o) => o,
        _ => return Err("a schema is an object or a boolean".into()),
    };
    for (k, v) in obj {
        if ANNOTATIONS.contains(&k.as_str()) {
            continue;
        }
        if !KEYWORDS.contains(&k.as_str()) {
            return Err(format!("unsupported keyword {k:?}"));
        }
        match k.as_str() {
            "properties" => {
                for s in v.as_object().ok_or("properties must be an object")?.values() {
                    check_schema(s)?;
                }
            }
            "additionalProperties" | "items" | "not" => check_schema(v)?,
            "allOf" | "anyOf" => {
                for s in v.as_array().ok_or(format!("{k} must be an array"))? {
                    check_schema(s)?;
                }
            }
            "required" if !v.as_array().is_some_and(|a| a.iter().all(Value::is_string)) => {
                return Err("required must be an array of strings".into());
            }
            _ => {}
        }
    }
    Ok(())
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn has_type(v: &Value, t: &str) -> bool {
    let actual = type_name(v);
    actual == t
        || (t == "number" && actual == "integer")
        || (t == "integer" && v.as_f64().is_some_and(|f| f.fract() == 0.0))
}

fn num(schema: &Map<String, Value>, k: &str) -> Option<f64> {
    schema.get(k).and_then(Value::as_f64)
}

/// Checks `value` against `schema`; the error names where (`at`) and why.
pub fn validate(schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let here = if at.is_empty() { "the value".to_string() } else { at.to_string() };
    let s = match schema {
        Value::Bool(true) => return Ok(()),
        Value::Bool(false) => return Err(format!("{here} is not allowed")),
        Value::Object(o) => o,
        _ => return Err("the schema is not an object".into()),
    };
    if let Some(t) = s.get("type") {
        let ok = match t {
            Value::String(t) => has_type(value, t),
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).any(|t| has_type(value, t)),
            _ => false,
        };
        if !ok {
            return Err(format!("{here} is a {}, the schema wants {t}", type_name(value)));
        }
    }
    if let Some(Value::Array(options)) = s.get("enum")
        && !options.contains(value)
    {
        return Err(format!("{here} is not one of {}", Value::Array(options.clone())));
    }
    if let Some(c) = s.get("const")
        && c != value
    {
        return Err(format!("{here} must be {c}"));
    }
    if let Some(x) = value.as_f64() {
        if num(s, "minimum").is_some_and(|m| x < m) {
            return Err(format!("{here} = {x} is below the minimum {}", s["minimum"]));
        }
        if num(s, "maximum").is_some_and(|m| x > m) {
            return Err(format!("{here} = {x} is above the maximum {}", s["maximum"]));
        }
        if num(s, "exclusiveMinimum").is_some_and(|m| x <= m) {
            return Err(format!("{here} = {x} must be above {}", s["exclusiveMinimum"]));
        }
        if num(s, "exclusiveMaximum").is_some_and(|m| x >= m) {
            return Err(format!("{here} = {x} must be below {}", s["exclusiveMaximum"]));
        }
    }
    if let Value::String(text) = value {
        let n = text.chars().count() as f64;
        if num(s, "minLength").is_some_and(|m| n < m) {
            return Err(format!("{here} is shorter than {} characters", s["minLength"]));
        }
        if num(s, "maxLength").is_some_and(|m| n > m) {
            return Err(format!("{here} is longer than {} characters", s["maxLength"]));
        }
    }
    if let Value::Array(items) = value {
        let n = items.len() as f64;
        if num(s, "minItems").is_some_and(|m| n < m) {
            return Err(format!("{here} has fewer than {} items", s["minItems"]));
        }
        if num(s, "maxItems").is_some_and(|m| n > m) {
            return Err(format!("{here} has more than {} items", s["maxItems"]));
        }
        if let Some(item) = s.get("items") {
            for (i, v) in items.iter().enumerate() {
                validate(item, v, &format!("{at}[{i}]"))?;
            }
        }
    }
    if let Value::Object(fields) = value {
        if let Some(Value::Array(required)) = s.get("required") {
            for r in required.iter().filter_map(Value::as_str) {
                if !fields.contains_key(r) {
                    return Err(format!("{here} lacks the required field {r:?}"));
                }
            }
        }
        let props = s.get("properties").and_then(Value::as_object);
        for (k, v) in fields {
            let path = format!("{at}.{k}");
            match props.and_then(|p| p.get(k)) {
                Some(sub) => validate(sub, v, &path)?,
                None => {
                    if let Some(extra) = s.get("additionalProperties") {
                        validate(extra, v, &path)?;
                    }
                }
            }
        }
    }
    if let Some(Value::Array(all)) = s.get("allOf") {
        for sub in all {
            validate(sub, value, at)?;
        }
    }
    if let Some(Value::Array(any)) = s.get("anyOf")
        && !any.iter().any(|sub| validate(sub, value, at).is_ok())
    {
        return Err(format!("{here} matches none of anyOf"));
    }
    if let Some(not) = s.get("not")
        && validate(not, value, at).is_ok()
    {
        return Err(format!("{here} matches a schema it must not"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_sdk::MemTree;
    use serde_json::json;

    fn write(path: &str, data: &str) -> Change {
        Change { path: path.into(), kind: ChangeKind::DataChanged, data: Some(data.as_bytes().to_vec()) }
    }

    #[test]
    fn checks_children_against_the_parent_schema() {
        let mut t = MemTree::new();
        let schema = json!({"type": "object", "required": ["port"],
            "properties": {"port": {"type": "integer", "minimum": 1, "maximum": 65535}, "host": {"type": "string"}},
            "additionalProperties": false});
        t.put("/config/.schema", schema.to_string().as_bytes());
        let ctx = Context::test();
        assert!(JsonSchema::validate(&ctx, &t, &[write("/config/web", r#"{"port": 80, "host": "a"}"#)]).is_ok());
        let e = JsonSchema::validate(&ctx, &t, &[write("/config/web", r#"{"port": 70000}"#)]).unwrap_err();
        assert!(e.contains("above the maximum"), "{e}");
        let e = JsonSchema::validate(&ctx, &t, &[write("/config/web", r#"{"host": "a"}"#)]).unwrap_err();
        assert!(e.contains("required field \"port\""), "{e}");
        assert!(JsonSchema::validate(&ctx, &t, &[write("/config/web", r#"{"port": 1, "x": 1}"#)]).is_err());
        assert!(JsonSchema::validate(&ctx, &t, &[write("/config/web", "not json")]).is_err());
        // Elsewhere, anything goes.
        assert!(JsonSchema::validate(&ctx, &t, &[write("/other/x", "not json")]).is_ok());
    }

    #[test]
    fn refuses_schemas_it_cannot_check() {
        let ctx = Context::test();
        let t = MemTree::new();
        let e = JsonSchema::validate(&ctx, &t, &[write("/c/.schema", r#"{"pattern": "^a"}"#)]).unwrap_err();
        assert!(e.contains("unsupported keyword"), "{e}");
        assert!(JsonSchema::validate(&ctx, &t, &[write("/c/.schema", r#"{"type": "string"}"#)]).is_ok());
    }
}
