//! Server-side printing: `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` answers a
//! `meta.k8s.io/v1` Table (<https://kubernetes.io/docs/reference/using-api/api-concepts/#receiving-resources-as-tables>).
//!
//! Custom resources get the columns of their CRD version's `additionalPrinterColumns` after
//! `Name`, as the apiextensions-apiserver's table convertor builds them: each `jsonPath` is
//! evaluated (the subset used by CRDs: `.a.b`, `.a[0]`, `.a[*]`, `.a[?(@.k=="v")].b`), a `date`
//! cell becomes a human duration like `5m` (`ConvertToHumanReadableDateType`), a column whose
//! path finds nothing is `null`. Built-in kinds get `Name`, a few columns of their own (Secret
//! `Type`/`Data`, Namespace `Status`, Pod `Status`), and `Age`. Rows carry the object as
//! `PartialObjectMetadata` (`includeObject=Metadata`, the default), the whole object
//! (`Object`) or nothing (`None`).

use jiff::Timestamp;
use serde_json::{Value, json};

use super::resources::ResourceInfo;

/// Kubernetes' `duration.HumanDuration`.
pub fn human_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    if s < 60 * 2 {
        return format!("{s}s");
    }
    let m = s / 60;
    if m < 10 {
        let rem = s % 60;
        return if rem == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{rem}s")
        };
    }
    if m < 60 * 3 {
        return format!("{m}m");
    }
    let h = m / 60;
    if h < 8 {
        let rem = m % 60;
        return if rem == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{rem}m")
        };
    }
    if h < 48 {
        return format!("{h}h");
    }
    if h < 24 * 8 {
        let d = h / 24;
        let rem = h % 24;
        return if rem == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{rem}h")
        };
    }
    if h < 24 * 365 * 2 {
        return format!("{}d", h / 24);
    }
    format!("{}y", h / 24 / 365)
}

fn age(timestamp: &Value, now: Timestamp) -> Value {
    match timestamp.as_str().and_then(|t| t.parse::<Timestamp>().ok()) {
        Some(t) => Value::String(human_duration(now.as_second() - t.as_second())),
        None => Value::String("<unknown>".into()),
    }
}

enum Step {
    Field(String),
    Index(usize),
    All,
    Filter(String, String),
}

fn parse_path(path: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    let text = path.trim().trim_start_matches('{').trim_end_matches('}');
    let text = text.strip_prefix('$').unwrap_or(text);
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end > 0 {
                steps.push(Step::Field(r[..end].to_owned()));
            }
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(end) = r.find(']') else { break };
            let inner = &r[..end];
            if inner == "*" {
                steps.push(Step::All);
            } else if let Ok(i) = inner.parse::<usize>() {
                steps.push(Step::Index(i));
            } else if let Some(f) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                if let Some((k, v)) = f.split_once("==") {
                    let v = v.trim().trim_matches('"').trim_matches('\'');
                    steps.push(Step::Filter(k.trim().to_owned(), v.to_owned()));
                }
            } else {
                let quoted = inner.trim_matches('\'').trim_matches('"');
                steps.push(Step::Field(quoted.to_owned()));
            }
            rest = &r[end + 1..];
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            steps.push(Step::Field(rest[..end].to_owned()));
            rest = &rest[end..];
        }
    }
    steps
}

/// Every value `path` finds in `object`.
pub fn find(object: &Value, path: &str) -> Vec<Value> {
    let mut current = vec![object.clone()];
    for step in parse_path(path) {
        let mut next = Vec::new();
        for value in current {
            match &step {
                Step::Field(f) => {
                    if let Some(v) = value.get(f) {
                        next.push(v.clone());
                    }
                }
                Step::Index(i) => {
                    if let Some(v) = value.get(i) {
                        next.push(v.clone());
                    }
                }
                Step::All => {
                    if let Some(a) = value.as_array() {
                        next.extend(a.iter().cloned());
                    }
                }
                Step::Filter(k, v) => {
                    if let Some(a) = value.as_array() {
                        next.extend(
                            a.iter()
                                .filter(|item| match item.get(k) {
                                    Some(Value::String(s)) => s == v,
                                    Some(other) => *other.to_string() == **v,
                                    None => false,
                                })
                                .cloned(),
                        );
                    }
                }
            }
        }
        current = next;
    }
    current
}

fn cell(type_: &str, value: Option<Value>, now: Timestamp) -> Value {
    let Some(value) = value else {
        return Value::Null;
    };
    match type_ {
        "date" => age(&value, now),
        "integer" => value.as_i64().map_or(Value::Null, |i| json!(i)),
        "number" => value.as_f64().map_or(Value::Null, |f| json!(f)),
        "boolean" => value.as_bool().map_or(Value::Null, |b| json!(b)),
        _ => match value {
            Value::String(s) => Value::String(s),
            Value::Null => Value::Null,
            other => Value::String(other.to_string()),
        },
    }
}

fn column(name: &str, type_: &str, format: &str, description: &str, priority: i64) -> Value {
    json!({"name": name, "type": type_, "format": format, "description": description, "priority": priority})
}

/// The Table for `objects` of `info`.
pub fn table(
    info: &ResourceInfo,
    objects: &[Value],
    rv: u64,
    include: &str,
    now: Timestamp,
) -> Value {
    let name_col = column(
        "Name",
        "string",
        "name",
        "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
        0,
    );
    let age_col = column(
        "Age",
        "date",
        "",
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
        0,
    );
    let mut columns = vec![name_col];
    // (column type, how to get the cell)
    type CellFn = Box<dyn Fn(&Value) -> Value>;
    let mut cells: Vec<CellFn> = vec![Box::new(|o: &Value| o["metadata"]["name"].clone())];
    if let Some(custom) = &info.custom {
        if custom.columns.is_empty() {
            columns.push(age_col);
            cells.push(Box::new(move |o: &Value| {
                age(&o["metadata"]["creationTimestamp"], now)
            }));
        }
        for c in &custom.columns {
            columns.push(column(
                &c.name,
                &c.type_,
                &c.format,
                &c.description,
                c.priority,
            ));
            let path = c.json_path.clone();
            let type_ = c.type_.clone();
            cells.push(Box::new(move |o: &Value| {
                cell(&type_, find(o, &path).into_iter().next(), now)
            }));
        }
    } else {
        match (info.group.as_str(), info.resource.as_str()) {
            ("", "secrets") => {
                columns.push(column("Type", "string", "", "The type of the secret", 0));
                columns.push(column(
                    "Data",
                    "string",
                    "",
                    "The number of entries in data",
                    0,
                ));
                cells.push(Box::new(|o: &Value| o["type"].clone()));
                cells.push(Box::new(|o: &Value| {
                    json!(o["data"].as_object().map_or(0, serde_json::Map::len))
                }));
            }
            ("", "configmaps") => {
                columns.push(column(
                    "Data",
                    "string",
                    "",
                    "The number of entries in data",
                    0,
                ));
                cells.push(Box::new(|o: &Value| {
                    json!(
                        o["data"].as_object().map_or(0, serde_json::Map::len)
                            + o["binaryData"].as_object().map_or(0, serde_json::Map::len)
                    )
                }));
            }
            ("", "namespaces") | ("", "pods") => {
                columns.push(column(
                    "Status",
                    "string",
                    "",
                    "The status of the object",
                    0,
                ));
                cells.push(Box::new(|o: &Value| o["status"]["phase"].clone()));
            }
            _ => {}
        }
        columns.push(age_col);
        cells.push(Box::new(move |o: &Value| {
            age(&o["metadata"]["creationTimestamp"], now)
        }));
    }
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let values: Vec<Value> = cells.iter().map(|f| f(o)).collect();
            let object = match include {
                "None" => Value::Null,
                "Object" => o.clone(),
                _ => json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}),
            };
            if object.is_null() {
                json!({"cells": values})
            } else {
                json!({"cells": values, "object": object})
            }
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv.to_string()},
        "columnDefinitions": columns,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_paths_of_printer_columns() {
        let o = json!({"status": {"conditions": [{"type": "A", "status": "False"}, {"type": "Ready", "status": "True"}]},
                       "spec": {"roleArn": "arn"}});
        assert_eq!(
            find(&o, ".status.conditions[?(@.type==\"Ready\")].status"),
            vec![json!("True")]
        );
        assert_eq!(find(&o, ".spec.roleArn"), vec![json!("arn")]);
        assert_eq!(find(&o, ".status.conditions[0].type"), vec![json!("A")]);
        assert!(find(&o, ".spec.missing").is_empty());
        assert_eq!(human_duration(30), "30s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(3600 * 5), "5h");
    }
}
