//! Checks exchanges with the stand-in against GitHub's own OpenAPI
//! description (`tests/fixtures/github-api/`): each request's method, path,
//! declared parameters, headers and body; each answer's body against the
//! schema of its operation and status.
//!
//! OpenAPI 3.0 schemas are JSON Schema draft 4 plus `nullable`; `nullable:
//! true` is translated to a `null` alternative before validation.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::testkit::github::Exchange;

/// GitHub's description, loaded once per test.
pub(crate) struct Description {
    paths: Map<String, Value>,
    basic_error: Value,
    validators: std::sync::Mutex<HashMap<String, std::sync::Arc<jsonschema::Validator>>>,
}

/// OpenAPI 3.0 `nullable: true` → a JSON Schema that also accepts `null`.
pub(crate) fn translate(schema: &Value) -> Value {
    let Value::Object(object) = schema else {
        return schema.clone();
    };
    let mut out = Map::new();
    for (key, value) in object {
        let translated = match key.as_str() {
            "properties" | "patternProperties" => match value {
                Value::Object(properties) => Value::Object(
                    properties
                        .iter()
                        .map(|(name, schema)| (name.clone(), translate(schema)))
                        .collect(),
                ),
                other => other.clone(),
            },
            "items" | "additionalProperties" | "not" => translate(value),
            "anyOf" | "oneOf" | "allOf" => match value {
                Value::Array(schemas) => Value::Array(schemas.iter().map(translate).collect()),
                other => other.clone(),
            },
            // OpenAPI-only keywords: no meaning to JSON Schema.
            "nullable" | "example" | "examples" | "discriminator" | "readOnly" | "writeOnly"
            | "deprecated" | "xml" | "externalDocs" => continue,
            _ => value.clone(),
        };
        out.insert(key.clone(), translated);
    }
    if object.get("nullable") == Some(&Value::Bool(true)) {
        match out.get("type").cloned() {
            Some(Value::String(kind)) => {
                out.insert(
                    "type".into(),
                    Value::Array(vec![kind.into(), "null".into()]),
                );
                if let Some(Value::Array(values)) = out.get_mut("enum")
                    && !values.contains(&Value::Null)
                {
                    values.push(Value::Null);
                }
            }
            _ => {
                return serde_json::json!({"anyOf": [Value::Object(out), {"type": "null"}]});
            }
        }
    }
    Value::Object(out)
}

impl Description {
    pub(crate) fn load() -> Self {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/github-api/api.github.com.excerpt.json"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let document: Value = serde_json::from_str(&text).unwrap();
        let paths = document["paths"].as_object().unwrap().clone();
        let basic_error = paths["/repos/{owner}/{repo}/installation"]["get"]["responses"]["404"]
            ["content"]["application/json"]["schema"]
            .clone();
        Self {
            paths,
            basic_error,
            validators: std::sync::Mutex::default(),
        }
    }

    /// The operation for `method` on `path` (percent-encoded as sent), and
    /// the path parameters by name.
    fn operation(&self, method: &str, path: &str) -> Option<(&Value, HashMap<String, String>)> {
        let sent: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        for (template, item) in &self.paths {
            let parts: Vec<&str> = template.trim_start_matches('/').split('/').collect();
            if parts.len() != sent.len() {
                continue;
            }
            let mut params = HashMap::new();
            let matched = parts.iter().zip(&sent).all(|(part, segment)| {
                match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                    Some(name) => {
                        params.insert(name.to_owned(), (*segment).to_owned());
                        !segment.is_empty()
                    }
                    None => part == segment,
                }
            });
            if matched && let Some(operation) = item.get(method.to_ascii_lowercase()) {
                return Some((operation, params));
            }
        }
        None
    }

    fn validate(&self, key: &str, schema: &Value, instance: &Value) -> Vec<String> {
        let validator = {
            let mut cache = self.validators.lock().unwrap();
            cache
                .entry(key.to_owned())
                .or_insert_with(|| {
                    std::sync::Arc::new(
                        jsonschema::options()
                            .with_draft(jsonschema::Draft::Draft4)
                            .build(&translate(schema))
                            .unwrap(),
                    )
                })
                .clone()
        };
        validator
            .iter_errors(instance)
            .map(|error| format!("{key}: {} at {}", error, error.instance_path()))
            .collect()
    }

    /// Every way `exchange` departs from the description.
    pub(crate) fn problems(&self, exchange: &Exchange) -> Vec<String> {
        let name = format!("{} {}", exchange.method, exchange.path);
        let Some((operation, path_params)) = self.operation(&exchange.method, &exchange.path)
        else {
            return vec![format!("{name}: not an operation of the description")];
        };
        let mut problems = Vec::new();
        let declared: Vec<&Value> = operation["parameters"]
            .as_array()
            .map(|params| params.iter().collect())
            .unwrap_or_default();
        let query: Vec<(String, String)> =
            url::form_urlencoded::parse(exchange.query.as_deref().unwrap_or_default().as_bytes())
                .into_owned()
                .collect();
        for param in &declared {
            let param_name = param["name"].as_str().unwrap_or_default();
            let value = match param["in"].as_str() {
                Some("path") => path_params.get(param_name).cloned(),
                Some("query") => query
                    .iter()
                    .find(|(key, _)| key == param_name)
                    .map(|(_, value)| value.clone()),
                _ => continue,
            };
            match value {
                None if param["required"] == Value::Bool(true) => {
                    problems.push(format!("{name}: required parameter `{param_name}` missing"));
                }
                None => {}
                Some(value) => {
                    let instance = match param["schema"]["type"].as_str() {
                        Some("integer") => match value.parse::<i64>() {
                            Ok(number) => Value::from(number),
                            Err(_) => Value::String(value.clone()),
                        },
                        _ => Value::String(value.clone()),
                    };
                    problems.extend(self.validate(
                        &format!("{name} parameter {param_name}"),
                        &param["schema"],
                        &instance,
                    ));
                }
            }
        }
        for (key, _) in &query {
            let known = declared
                .iter()
                .any(|param| param["in"] == "query" && param["name"] == key.as_str());
            if !known {
                problems.push(format!("{name}: query parameter `{key}` is not declared"));
            }
        }
        // The headers GitHub asks every client for.
        for (header, expected) in [
            ("accept", Some("application/vnd.github+json")),
            ("x-github-api-version", Some("2022-11-28")),
            ("user-agent", None),
        ] {
            match (exchange.header(header), expected) {
                (None, _) => problems.push(format!("{name}: no `{header}` header")),
                (Some(sent), Some(expected)) if sent != expected => {
                    problems.push(format!("{name}: `{header}: {sent}`"));
                }
                _ => {}
            }
        }
        match operation.get("requestBody") {
            Some(body) => {
                let schema = &body["content"]["application/json"]["schema"];
                match serde_json::from_slice::<Value>(&exchange.body) {
                    Ok(instance) => {
                        problems.extend(self.validate(
                            &format!("{name} request"),
                            schema,
                            &instance,
                        ));
                    }
                    Err(_) if exchange.body.is_empty() && body["required"] != Value::Bool(true) => {
                    }
                    Err(err) => problems.push(format!("{name}: request body is not JSON: {err}")),
                }
            }
            None if !exchange.body.is_empty() => {
                problems.push(format!("{name}: a body where the description has none"));
            }
            None => {}
        }
        let status = exchange.status.to_string();
        let response = &operation["responses"][status.as_str()];
        let schema = if response.is_null() {
            (exchange.status >= 400).then_some(&self.basic_error)
        } else {
            response
                .get("content")
                .and_then(|content| content.get("application/json"))
                .map(|content| &content["schema"])
        };
        match (schema, &exchange.response) {
            (Some(schema), Some(body)) => {
                problems.extend(self.validate(&format!("{name} {status}"), schema, body));
            }
            (None, Some(_)) => {
                problems.push(format!("{name} {status}: a body where none is described"))
            }
            (Some(_), None) => {
                problems.push(format!("{name} {status}: no body where one is described"))
            }
            (None, None) => {
                if response.is_null() && exchange.status < 400 && exchange.status != 304 {
                    problems.push(format!("{name}: status {status} is not described"));
                }
            }
        }
        problems
    }

    /// Asserts that every exchange conforms.
    pub(crate) fn assert_conforms(&self, exchanges: &[Exchange]) {
        assert!(!exchanges.is_empty(), "no exchange to check");
        let problems: Vec<String> = exchanges
            .iter()
            .filter(|exchange| exchange.status != 0)
            .flat_map(|exchange| self.problems(exchange))
            .collect();
        assert!(problems.is_empty(), "{problems:#?}");
    }
}
