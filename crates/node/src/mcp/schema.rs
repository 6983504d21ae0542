//! A tool's input and output JSON Schemas, built from the node's OpenAPI document:
//! the path segments it fills, the query parameters, the body's fields (their
//! schemas inlined under `$defs`), and the route's success answer. A tool's
//! arguments are the HTTP API's field names, because they are its fields.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::tools::ToolSpec;

/// Deepest chain of `$ref`s followed while collecting a schema's definitions.
const REF_DEPTH_MAX: usize = 32;

/// `(input, output)` schemas of `tool`; `Err` names what the document lacks.
pub(crate) fn schemas(tool: &ToolSpec, openapi: &Value) -> Result<(Value, Option<Value>), String> {
    let (path, fixed_query) = split_query(tool.path);
    let (template, item) = path_item(openapi, path)
        .ok_or_else(|| format!("{}: no OpenAPI path serves {path}", tool.name))?;
    let operation = &item[tool.method.to_lowercase()];
    if operation.is_null() {
        return Err(format!("{}: {template} has no {}", tool.name, tool.method));
    }
    let components = &openapi["components"]["schemas"];
    let mut properties = Map::new();
    let mut required = Vec::new();
    let mut referenced = BTreeMap::new();
    let parameters = operation["parameters"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let parameter = |name: &str, place: &str| {
        parameters
            .iter()
            .find(|p| p["name"] == name && p["in"] == place)
            .cloned()
    };
    // The path segments the tool leaves to its arguments.
    for name in path
        .split('/')
        .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
    {
        let declared = parameter(name, "path").unwrap_or(json!({"schema": {"type": "string"}}));
        let mut schema = declared["schema"].clone();
        if let Some(description) = declared["description"].as_str() {
            schema["description"] = json!(description);
        }
        properties.insert(name.to_string(), schema);
        required.push(name.to_string());
    }
    for declared in parameters.iter().filter(|p| p["in"] == "query") {
        let name = declared["name"].as_str().unwrap_or_default();
        if fixed_query.iter().any(|(fixed, _)| *fixed == name) {
            continue;
        }
        let mut schema = declared["schema"].clone();
        if let Some(description) = declared["description"].as_str() {
            schema["description"] = json!(description);
        }
        properties.insert(name.to_string(), schema);
    }
    let body = &operation["requestBody"]["content"]["application/json"]["schema"];
    if !body.is_null() {
        let body = inline(body, components, &mut referenced)?;
        for (name, schema) in body["properties"].as_object().cloned().unwrap_or_default() {
            properties.insert(name, schema);
        }
        for name in body["required"].as_array().into_iter().flatten() {
            if let Some(name) = name.as_str() {
                required.push(name.to_string());
            }
        }
    }
    if !tool.read_only && properties.contains_key("justification") {
        // Every write through MCP says why.
        if !required.iter().any(|r| r == "justification") {
            required.push("justification".to_string());
        }
    }
    let mut input = json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    });
    let output = success_schema(operation)
        .map(|schema| inline(&schema, components, &mut referenced))
        .transpose()?
        .filter(|schema| schema["type"] == "object");
    let definitions = definitions(components, &referenced)?;
    if !definitions.is_empty() {
        input["$defs"] = Value::Object(definitions.clone());
    }
    let output = output.map(|mut schema| {
        if !definitions.is_empty() {
            schema["$defs"] = Value::Object(definitions);
        }
        schema
    });
    Ok((input, output))
}

/// The path and the query pairs a tool fixes (`/v1/reports/summary?format=json`).
pub(crate) fn split_query(path: &str) -> (&str, Vec<(&str, &str)>) {
    match path.split_once('?') {
        None => (path, Vec::new()),
        Some((path, query)) => (
            path,
            query
                .split('&')
                .filter_map(|pair| pair.split_once('='))
                .collect(),
        ),
    }
}

/// The OpenAPI path item that serves `path`: its own template if it has one, or the
/// template whose parameters match the tool's fixed segments.
fn path_item<'a>(openapi: &'a Value, path: &str) -> Option<(&'a str, &'a Value)> {
    let paths = openapi["paths"].as_object()?;
    if let Some((template, item)) = paths.get_key_value(path) {
        return Some((template.as_str(), item));
    }
    paths
        .iter()
        .find(|(template, _)| crate::api::routes::serves(template, path))
        .map(|(template, item)| (template.as_str(), item))
}

/// The schema of the first success answer, if every success answer has a body.
fn success_schema(operation: &Value) -> Option<Value> {
    let responses = operation["responses"].as_object()?;
    let successes: Vec<&Value> = responses
        .iter()
        .filter(|(status, _)| status.starts_with('2'))
        .map(|(_, response)| response)
        .collect();
    let schema = |response: &Value| response["content"]["application/json"]["schema"].clone();
    if successes.iter().any(|response| schema(response).is_null()) {
        return None;
    }
    successes.first().map(|response| schema(response))
}

/// `schema` with its top-level `$ref` replaced by the component it names and every
/// reference pointed at `$defs`; the components it needs noted in `referenced`.
fn inline(
    schema: &Value,
    components: &Value,
    referenced: &mut BTreeMap<String, ()>,
) -> Result<Value, String> {
    let mut schema = match component_name(schema) {
        Some(name) => components
            .get(name)
            .cloned()
            .ok_or_else(|| format!("no schema {name} in the document"))?,
        None => schema.clone(),
    };
    collect(&schema, components, referenced, 0)?;
    rewrite(&mut schema);
    Ok(schema)
}

/// The component a `{"$ref": "#/components/schemas/NAME"}` names.
fn component_name(schema: &Value) -> Option<&str> {
    schema["$ref"]
        .as_str()?
        .strip_prefix("#/components/schemas/")
}

/// Notes every component `schema` reaches, following references.
fn collect(
    schema: &Value,
    components: &Value,
    referenced: &mut BTreeMap<String, ()>,
    depth: usize,
) -> Result<(), String> {
    if depth > REF_DEPTH_MAX {
        return Err("schema references nest too deep".into());
    }
    match schema {
        Value::Object(map) => {
            if let Some(name) = component_name(schema) {
                if referenced.insert(name.to_string(), ()).is_none() {
                    let target = components
                        .get(name)
                        .ok_or_else(|| format!("no schema {name} in the document"))?;
                    collect(target, components, referenced, depth + 1)?;
                }
            }
            for value in map.values() {
                collect(value, components, referenced, depth)?;
            }
        }
        Value::Array(items) => {
            for value in items {
                collect(value, components, referenced, depth)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Points every `#/components/schemas/` reference at `#/$defs/`.
fn rewrite(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get_mut("$ref") {
                if let Some(name) = reference.strip_prefix("#/components/schemas/") {
                    *reference = format!("#/$defs/{name}");
                }
            }
            for value in map.values_mut() {
                rewrite(value);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(rewrite),
        _ => {}
    }
}

/// The `$defs` of the components `referenced` names.
fn definitions(
    components: &Value,
    referenced: &BTreeMap<String, ()>,
) -> Result<Map<String, Value>, String> {
    let mut definitions = Map::new();
    for name in referenced.keys() {
        let mut schema = components
            .get(name)
            .cloned()
            .ok_or_else(|| format!("no schema {name} in the document"))?;
        rewrite(&mut schema);
        definitions.insert(name.clone(), schema);
    }
    Ok(definitions)
}
