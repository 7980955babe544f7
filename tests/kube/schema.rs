//! Structural schemas of custom resources: pruning, defaulting and validation, in the order and
//! with the rules of the apiextensions-apiserver
//! (<https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#specifying-a-structural-schema>,
//! sections "Field pruning", "Defaulting" and "Validation"):
//!
//! 1. **Pruning** drops every field the schema does not specify, except under
//!    `x-kubernetes-preserve-unknown-fields: true`; `apiVersion`, `kind` and `metadata` at the root
//!    are always kept (metadata is pruned to ObjectMeta by the generic code). The dropped paths are
//!    returned, for `fieldValidation=Strict|Warn`.
//! 2. **Defaulting** sets `default` for absent fields (and for `null` where the field is not
//!    `nullable`), top down, so a defaulted object's own defaults apply too.
//! 3. **Validation** with a real JSON Schema validator (the `jsonschema` crate, draft 4 as OpenAPI
//!    3.0 is), over the schema rewritten into plain JSON Schema: `nullable: true` admits `null`,
//!    `x-kubernetes-int-or-string: true` becomes `anyOf: [integer, string]`, formats are checked
//!    only for those the apiserver checks (`date-time`, `date`, `uuid`, …; `int32`, `uint32`,
//!    `int64`, `double` are not checked, as in Kubernetes). CEL rules (`x-kubernetes-validations`)
//!    are not evaluated; rolegate's CRDs have none.
//!
//! Validation errors become `details.causes` of a 422 Invalid Status, with Kubernetes' field path
//! syntax (`spec.subjects[0].kind`) and its reason names (`FieldValueRequired`,
//! `FieldValueNotSupported`, `FieldValueTypeInvalid`, `FieldValueInvalid`).

use serde_json::{Map, Value, json};

/// One field error, as a `StatusCause`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    pub reason: String,
    pub field: String,
    pub message: String,
}

/// The structural schema of one CRD version, with its compiled validator.
#[derive(Debug)]
pub struct Schema {
    structural: Value,
    plain: Value,
    validator: jsonschema::Validator,
}

/// Formats the apiextensions-apiserver validates (others are only documentation).
const CHECKED_FORMATS: &[&str] = &[
    "date-time",
    "date",
    "uuid",
    "email",
    "ipv4",
    "ipv6",
    "hostname",
    "uri",
];

impl Schema {
    /// Compiles `openAPIV3Schema`.
    ///
    /// # Errors
    /// The schema is not valid JSON Schema once rewritten.
    pub fn new(structural: &Value) -> Result<Self, String> {
        let plain = to_json_schema(structural);
        let validator = jsonschema::draft4::options()
            .should_validate_formats(true)
            .build(&plain)
            .map_err(|e| e.to_string())?;
        Ok(Self {
            structural: structural.clone(),
            plain,
            validator,
        })
    }

    /// The schema as the CRD gives it.
    pub const fn structural(&self) -> &Value {
        &self.structural
    }

    /// Prunes unknown fields in place; returns the dropped paths (`spec.foo`).
    pub fn prune(&self, object: &mut Value) -> Vec<String> {
        let mut dropped = Vec::new();
        if let Value::Object(map) = object {
            let props = self.structural.get("properties");
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                if matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                match props.and_then(|p| p.get(&key)) {
                    Some(sub) => {
                        if let Some(v) = map.get_mut(&key) {
                            prune(sub, v, &key, &mut dropped);
                        }
                    }
                    None if preserves(&self.structural) => {}
                    None => {
                        map.remove(&key);
                        dropped.push(key);
                    }
                }
            }
        }
        dropped
    }

    /// Applies defaults in place.
    pub fn default(&self, object: &mut Value) {
        apply_defaults(&self.structural, object);
    }

    /// Validates the whole object; metadata is validated by the generic code and skipped here.
    pub fn validate(&self, object: &Value) -> Vec<Cause> {
        let mut without_meta = object.clone();
        if let Value::Object(map) = &mut without_meta {
            map.remove("metadata");
        }
        let mut causes: Vec<Cause> = self
            .validator
            .iter_errors(&without_meta)
            .map(|e| cause(&e, &without_meta, &self.plain))
            .collect();
        causes.dedup();
        causes
    }
}

fn preserves(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
}

fn prune(schema: &Value, value: &mut Value, path: &str, dropped: &mut Vec<String>) {
    if preserves(schema) && schema.get("properties").is_none() {
        return;
    }
    match value {
        Value::Object(map) => {
            if schema
                .get("x-kubernetes-embedded-resource")
                .and_then(Value::as_bool)
                == Some(true)
            {
                // apiVersion, kind and metadata of an embedded object are kept.
            }
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                let keys: Vec<String> = map.keys().cloned().collect();
                for key in keys {
                    let child = format!("{path}.{key}");
                    match props.get(&key) {
                        Some(sub) => {
                            if let Some(v) = map.get_mut(&key) {
                                prune(sub, v, &child, dropped);
                            }
                        }
                        None if preserves(schema)
                            || (schema
                                .get("x-kubernetes-embedded-resource")
                                .and_then(Value::as_bool)
                                == Some(true)
                                && matches!(key.as_str(), "apiVersion" | "kind" | "metadata")) => {}
                        None => {
                            map.remove(&key);
                            dropped.push(child);
                        }
                    }
                }
            } else if let Some(additional) = schema.get("additionalProperties") {
                if additional.is_object() {
                    for (key, v) in map.iter_mut() {
                        prune(additional, v, &format!("{path}.{key}"), dropped);
                    }
                }
            } else if !preserves(schema)
                && schema.get("type").and_then(Value::as_str) == Some("object")
            {
                // An object schema without properties and without preserve-unknown-fields
                // specifies no field: everything in it is pruned.
                for key in map.keys() {
                    dropped.push(format!("{path}.{key}"));
                }
                map.clear();
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune(sub, item, &format!("{path}[{i}]"), dropped);
                }
            }
        }
        _ => {}
    }
}

fn apply_defaults(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (key, sub) in props {
                    let nullable = sub.get("nullable").and_then(Value::as_bool) == Some(true);
                    if let Some(default) = sub.get("default") {
                        match map.get(key) {
                            None => {
                                map.insert(key.clone(), default.clone());
                            }
                            Some(Value::Null) if !nullable => {
                                map.insert(key.clone(), default.clone());
                            }
                            _ => {}
                        }
                    }
                    if let Some(v) = map.get_mut(key) {
                        apply_defaults(sub, v);
                    }
                }
            } else if let Some(additional) =
                schema.get("additionalProperties").filter(|a| a.is_object())
            {
                for v in map.values_mut() {
                    apply_defaults(additional, v);
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for item in items {
                    apply_defaults(sub, item);
                }
            }
        }
        _ => {}
    }
}

/// Rewrites a structural schema into plain JSON Schema (draft 4).
fn to_json_schema(schema: &Value) -> Value {
    let Value::Object(map) = schema else {
        return schema.clone();
    };
    let mut out = Map::new();
    for (key, value) in map {
        match key.as_str() {
            "properties" | "patternProperties" | "definitions" => {
                let rewritten: Map<String, Value> = value
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), to_json_schema(v)))
                            .collect()
                    })
                    .unwrap_or_default();
                out.insert(key.clone(), Value::Object(rewritten));
            }
            "items" | "additionalProperties" | "not" if value.is_object() => {
                out.insert(key.clone(), to_json_schema(value));
            }
            "allOf" | "anyOf" | "oneOf" => {
                let rewritten: Vec<Value> = value
                    .as_array()
                    .map(|a| a.iter().map(to_json_schema).collect())
                    .unwrap_or_default();
                out.insert(key.clone(), Value::Array(rewritten));
            }
            "format" => {
                if value.as_str().is_some_and(|f| CHECKED_FORMATS.contains(&f)) {
                    out.insert(key.clone(), value.clone());
                }
            }
            "description" | "default" | "example" | "externalDocs" | "nullable" => {}
            k if k.starts_with("x-kubernetes-") => {}
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    if map
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true)
    {
        out.remove("type");
        let alternatives = json!([{"type": "integer"}, {"type": "string"}]);
        match out.get_mut("anyOf") {
            Some(Value::Array(existing)) => {
                // An existing anyOf further restricts; keep both.
                let previous = Value::Array(std::mem::take(existing));
                out.remove("anyOf");
                out.insert(
                    "allOf".into(),
                    json!([{"anyOf": alternatives}, {"anyOf": previous}]),
                );
            }
            _ => {
                out.insert("anyOf".into(), alternatives);
            }
        }
    }
    if map.get("nullable").and_then(Value::as_bool) == Some(true) {
        if let Some(Value::String(t)) = out.get("type").cloned() {
            out.insert("type".into(), json!([t, "null"]));
        }
        if let Some(Value::Array(options)) = out.get_mut("enum") {
            options.push(Value::Null);
        }
        // The other keywords (pattern, minimum, properties, …) do not apply to null.
    }
    Value::Object(out)
}

/// Kubernetes' field path (`spec.subjects[0].kind`) of a JSON Schema instance location.
fn field_path(location: &jsonschema::paths::Location) -> String {
    let mut out = String::new();
    for segment in location.iter() {
        match segment {
            jsonschema::paths::LocationSegment::Property(p) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&p);
            }
            jsonschema::paths::LocationSegment::Index(i) => {
                out.push_str(&format!("[{i}]"));
            }
        }
    }
    out
}

fn cause(error: &jsonschema::ValidationError<'_>, root: &Value, plain: &Value) -> Cause {
    use jsonschema::error::ValidationErrorKind as K;
    let path = field_path(error.instance_path());
    let pointer = error.instance_path().as_str().to_owned();
    let value = root.pointer(&pointer).cloned().unwrap_or(Value::Null);
    let join = |parent: &str, child: &str| {
        if parent.is_empty() {
            child.to_owned()
        } else {
            format!("{parent}.{child}")
        }
    };
    match error.kind() {
        K::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            let field = join(&path, name);
            Cause {
                reason: "FieldValueRequired".into(),
                message: format!("{field}: Required value"),
                field,
            }
        }
        K::Enum { options } => {
            let supported: Vec<String> = options
                .as_array()
                .map(|a| a.iter().map(Value::to_string).collect())
                .unwrap_or_default();
            Cause {
                reason: "FieldValueNotSupported".into(),
                message: format!(
                    "{path}: Unsupported value: {value}: supported values: {}",
                    supported.join(", ")
                ),
                field: path,
            }
        }
        K::Type { .. } => {
            let declared = plain
                .pointer(error.schema_path().as_str())
                .cloned()
                .unwrap_or(Value::Null);
            let expected = match &declared {
                Value::String(t) => t.clone(),
                Value::Array(ts) => ts
                    .iter()
                    .filter_map(Value::as_str)
                    .find(|t| *t != "null")
                    .unwrap_or("null")
                    .to_owned(),
                _ => "object".to_owned(),
            };
            Cause {
                reason: "FieldValueTypeInvalid".into(),
                message: format!(
                    "{path}: Invalid value: \"{actual}\": {path} in body must be of type {expected}: \"{actual}\"",
                    actual = json_type(&value)
                ),
                field: path,
            }
        }
        K::Pattern { pattern } => {
            invalid_cause(&path, &value, &format!("should match '{pattern}'"))
        }
        K::Minimum { limit } => invalid_cause(
            &path,
            &value,
            &format!("should be greater than or equal to {limit}"),
        ),
        K::Maximum { limit } => invalid_cause(
            &path,
            &value,
            &format!("should be less than or equal to {limit}"),
        ),
        K::MinLength { limit } => invalid_cause(
            &path,
            &value,
            &format!("should be at least {limit} chars long"),
        ),
        K::MaxLength { limit } => {
            invalid_cause(&path, &value, &format!("may not be longer than {limit}"))
        }
        K::MinItems { limit } => invalid_cause(
            &path,
            &value,
            &format!("should have at least {limit} items"),
        ),
        K::MaxItems { limit } => {
            invalid_cause(&path, &value, &format!("must have at most {limit} items"))
        }
        K::Format { format } => invalid_cause(&path, &value, &format!("must be of type {format}")),
        _ => Cause {
            reason: "FieldValueInvalid".into(),
            message: format!("{path}: Invalid value: {value}: {path} in body {error}"),
            field: path,
        },
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A FieldValueInvalid cause in the apiextensions wording: `<path> in body <rule>`.
fn invalid_cause(path: &str, value: &Value, rule: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid".into(),
        message: format!("{path}: Invalid value: {value}: {path} in body {rule}"),
        field: path.to_owned(),
    }
}

/// The structural-schema rules a CRD's `openAPIV3Schema` must follow, or the CRD is refused
/// (<https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#specifying-a-structural-schema>):
/// a non-empty `type` for the root, every specified field and every array item (except under
/// `x-kubernetes-int-or-string` or `x-kubernetes-preserve-unknown-fields`); no `description`,
/// `type`, `default`, `additionalProperties` or `nullable` inside `allOf`/`anyOf`/`oneOf`/`not`
/// (but the int-or-string pattern), and a field named there also specified outside; not both
/// `properties` and `additionalProperties`; at the root, `metadata` restricts only `name` and
/// `generateName`. Each error is (field path, message), with the path as the apiextensions
/// validation names it (`….properties[spec].properties[x].type`).
pub fn structural_errors(schema: &Value, path: &str) -> Vec<(String, String)> {
    let mut errors = Vec::new();
    check_node(schema, path, true, &mut errors);
    if let Some(meta) = schema["properties"].get("metadata") {
        let allowed = meta
            .as_object()
            .is_some_and(|m| m.keys().all(|k| k == "type" || k == "properties"))
            && meta["properties"]
                .as_object()
                .is_none_or(|p| p.keys().all(|k| k == "name" || k == "generateName"));
        if !allowed {
            errors.push((
                format!("{path}.properties[metadata]"),
                "Forbidden: must not specify anything other than name and generateName, but metadata is implicitly specified".into(),
            ));
        }
    }
    errors
}

fn check_node(node: &Value, path: &str, needs_type: bool, errors: &mut Vec<(String, String)>) {
    let int_or_string = node["x-kubernetes-int-or-string"].as_bool() == Some(true);
    let preserve = preserves(node);
    if needs_type && !int_or_string && !preserve && node["type"].as_str().is_none_or(str::is_empty)
    {
        errors.push((
            format!("{path}.type"),
            "Required value: must not be empty for specified object fields".into(),
        ));
    }
    if node.get("properties").is_some() && node.get("additionalProperties").is_some() {
        errors.push((
            format!("{path}.additionalProperties"),
            "Forbidden: additionalProperties and properties are mutual exclusive".into(),
        ));
    }
    if let Some(props) = node["properties"].as_object() {
        for (name, sub) in props {
            check_node(sub, &format!("{path}.properties[{name}]"), true, errors);
        }
    }
    if let Some(additional) = node.get("additionalProperties").filter(|a| a.is_object()) {
        check_node(
            additional,
            &format!("{path}.additionalProperties"),
            true,
            errors,
        );
    }
    match node.get("items") {
        Some(items) if items.is_object() => {
            check_node(items, &format!("{path}.items"), true, errors)
        }
        Some(_) => errors.push((
            format!("{path}.items"),
            "Forbidden: items must be a schema object and not an array".into(),
        )),
        None => {}
    }
    for junctor in ["allOf", "anyOf", "oneOf"] {
        for (i, branch) in node[junctor].as_array().into_iter().flatten().enumerate() {
            check_junctor(
                branch,
                node,
                &format!("{path}.{junctor}[{i}]"),
                int_or_string,
                errors,
            );
        }
    }
    if let Some(not) = node.get("not") {
        check_junctor(not, node, &format!("{path}.not"), int_or_string, errors);
    }
}

fn check_junctor(
    branch: &Value,
    outside: &Value,
    path: &str,
    int_or_string: bool,
    errors: &mut Vec<(String, String)>,
) {
    let pattern = int_or_string
        && (branch == &json!({"type": "integer"}) || branch == &json!({"type": "string"}));
    for key in [
        "description",
        "type",
        "default",
        "additionalProperties",
        "nullable",
    ] {
        if branch.get(key).is_some() && !(pattern && key == "type") {
            errors.push((
                format!("{path}.{key}"),
                "Forbidden: must be empty to be structural".to_owned(),
            ));
        }
    }
    if let Some(props) = branch["properties"].as_object() {
        for name in props.keys() {
            if outside["properties"].get(name).is_none() {
                errors.push((
                    format!("{path}.properties[{name}]"),
                    "Required value: must be specified outside of the value validation".into(),
                ));
            }
        }
    }
    if branch.get("items").is_some() && outside.get("items").is_none() {
        errors.push((
            format!("{path}.items"),
            "Required value: must be specified outside of the value validation".into(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        Schema::new(&json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "properties": {
                        "port": {"x-kubernetes-int-or-string": true},
                        "note": {"type": "string", "nullable": true, "default": "n"},
                        "mode": {"type": "string", "enum": ["a", "b"], "default": "a"},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "items": {"type": "array", "items": {"type": "object", "properties": {"n": {"type": "integer", "default": 1}}}},
                    },
                },
            },
        }))
        .unwrap()
    }

    #[test]
    fn structural_extras() {
        let s = schema();
        let mut o = json!({"spec": {"port": "http", "note": null, "free": {"any": {"thing": 1}},
                                     "labels": {"a": "b"}, "items": [{"x": 1}], "gone": true}});
        let dropped = s.prune(&mut o);
        assert_eq!(dropped, ["spec.gone", "spec.items[0].x"]);
        s.default(&mut o);
        // A nullable field keeps its null; an absent one gets its default; items get theirs.
        assert_eq!(o["spec"]["note"], Value::Null);
        assert_eq!(o["spec"]["mode"], "a");
        assert_eq!(o["spec"]["items"][0]["n"], 1);
        assert_eq!(o["spec"]["free"]["any"]["thing"], 1);
        assert!(s.validate(&o).is_empty(), "{:?}", s.validate(&o));
        // int-or-string takes both, and nothing else.
        o["spec"]["port"] = json!(8080);
        assert!(s.validate(&o).is_empty());
        o["spec"]["port"] = json!(true);
        assert_eq!(s.validate(&o)[0].field, "spec.port");
        o["spec"]["port"] = json!(1);
        o["spec"]["labels"]["a"] = json!(2);
        let causes = s.validate(&o);
        assert_eq!(causes[0].field, "spec.labels.a");
        assert_eq!(causes[0].reason, "FieldValueTypeInvalid");
        assert!(
            causes[0].message.contains("must be of type string"),
            "{causes:?}"
        );
    }

    #[test]
    fn structural_rules() {
        let ok = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "port": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]},
            "free": {"x-kubernetes-preserve-unknown-fields": true}}}}});
        assert!(
            structural_errors(&ok, "s").is_empty(),
            "{:?}",
            structural_errors(&ok, "s")
        );
        let bad = json!({"type": "object", "properties": {
            "metadata": {"type": "object", "properties": {"labels": {"type": "object"}}},
            "spec": {"type": "object", "properties": {"untyped": {"description": "x"}},
                     "anyOf": [{"properties": {"elsewhere": {"type": "string"}}}, {"type": "string"}]}}});
        let fields: Vec<String> = structural_errors(&bad, "s")
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(
            fields,
            [
                "s.properties[spec].properties[untyped].type",
                "s.properties[spec].anyOf[0].properties[elsewhere]",
                "s.properties[spec].anyOf[1].type",
                "s.properties[metadata]",
            ]
        );
    }
}
