//! The committed CRD matches the types, and its schema accepts the valid examples and rejects the invalid ones.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

fn testdata(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no examples in {}", root.display());
    files
}

#[test]
fn committed_yaml_matches_the_types() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("broadcast.yaml");
    let committed = std::fs::read_to_string(&path).expect("crds/broadcast.yaml exists");
    assert!(
        committed == castyard_crd::crd_yaml(),
        "crds/broadcast.yaml is stale: run `make crds` and commit the result"
    );
}

fn openapi_schema() -> Value {
    let crd: Value = serde_yaml::from_str(&castyard_crd::crd_yaml()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// OpenAPI v3 as the API server reads it, expressed in JSON Schema: `nullable` becomes a
/// null type, int-or-string becomes either, and unknown fields are errors, as with
/// `kubectl apply --validate=strict`.
fn to_json_schema(mut s: Value) -> Value {
    fn walk(v: &mut Value) {
        let Value::Object(map) = v else { return };
        if map.remove("nullable") == Some(Value::Bool(true))
            && let Some(Value::String(t)) = map.get("type").cloned()
        {
            map.insert("type".into(), json!([t, "null"]));
        }
        if map.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
            map.insert("type".into(), json!(["integer", "string"]));
        }
        if map.contains_key("properties") && !map.contains_key("additionalProperties") {
            map.insert("additionalProperties".into(), Value::Bool(false));
        }
        for (_, child) in map.iter_mut() {
            match child {
                Value::Object(_) => walk(child),
                Value::Array(items) => items.iter_mut().for_each(walk),
                _ => {}
            }
        }
    }
    walk(&mut s);
    // metadata is validated by the API server itself, not by the CRD schema.
    s["properties"]["apiVersion"] = json!({"type": "string"});
    s["properties"]["kind"] = json!({"type": "string"});
    s["properties"]["metadata"] = json!({"type": "object"});
    s
}

/// Every error the API server would give for `doc`: JSON Schema first, then the CEL rules.
fn errors(doc: &Value, old: Option<&Value>) -> Vec<String> {
    let schema = openapi_schema();
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&to_json_schema(schema.clone()))
        .expect("schema compiles");
    let mut out: Vec<String> = validator
        .iter_errors(doc)
        .map(|e| format!("{}: {}", e.instance_path, e))
        .collect();
    if out.is_empty() {
        let cel = kube_cel::Validator::new();
        out.extend(
            cel.validate(&schema, doc, old)
                .into_iter()
                .map(|e| format!("{e:?}")),
        );
    }
    out
}

fn load(path: &Path) -> Value {
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn valid_examples_pass_and_parse() {
    for path in testdata("valid") {
        let doc = load(&path);
        let errs = errors(&doc, None);
        assert!(errs.is_empty(), "{} rejected: {errs:#?}", path.display());
        let parsed: castyard_crd::Broadcast = serde_json::from_value(doc).unwrap();
        assert!(!parsed.spec.title.is_empty());
    }
}

#[test]
fn invalid_examples_are_rejected_for_the_stated_reason() {
    for path in testdata("invalid") {
        let text = std::fs::read_to_string(&path).unwrap();
        let reason = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# rejects: "))
            .unwrap_or_else(|| panic!("{} lacks a '# rejects:' line", path.display()));
        let errs = errors(&load(&path), None);
        assert!(!errs.is_empty(), "{} was accepted", path.display());
        assert!(
            errs.iter().any(|e| e.contains(reason)),
            "{}: expected an error about {reason:?}, got {errs:#?}",
            path.display()
        );
    }
}

#[test]
fn an_ended_broadcast_cannot_go_live_again() {
    let ended = load(&testdata("valid")[0]);
    let mut ended = ended;
    ended["spec"]["state"] = json!("Ended");
    let mut relive = ended.clone();
    relive["spec"]["state"] = json!("Live");
    let errs = errors(&relive, Some(&ended));
    assert!(
        errs.iter().any(|e| e.contains("cannot be started again")),
        "{errs:#?}"
    );
    // Ending is always allowed, and an ended broadcast may be edited while it stays ended.
    let mut live = ended.clone();
    live["spec"]["state"] = json!("Live");
    assert!(errors(&ended, Some(&live)).is_empty());
    assert!(errors(&ended, Some(&ended)).is_empty());
}

#[test]
fn status_subresource_and_printer_columns() {
    let crd: Value = serde_yaml::from_str(&castyard_crd::crd_yaml()).unwrap();
    let v = &crd["spec"]["versions"][0];
    assert_eq!(v["subresources"]["status"], json!({}));
    let cols: Vec<_> = v["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cols, ["Phase", "Live", "Guests", "Message", "Age"]);
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["metadata"]["name"], "broadcasts.castyard.dev");
}

/// `validate_spec` is what the API checks before storing; it must agree with the schema on
/// every example (the transition rule needs the old object, so the API checks it itself).
#[test]
fn validate_spec_agrees_with_the_schema() {
    for path in testdata("valid") {
        let b: castyard_crd::Broadcast = serde_json::from_value(load(&path)).unwrap();
        castyard_crd::validate::validate_spec(&b.spec)
            .unwrap_or_else(|e| panic!("{} rejected by validate_spec: {e}", path.display()));
    }
    for path in testdata("invalid") {
        let verdict = serde_json::from_value::<castyard_crd::Broadcast>(load(&path))
            .map_err(|e| e.to_string())
            .and_then(|b| castyard_crd::validate::validate_spec(&b.spec));
        assert!(
            verdict.is_err(),
            "{} accepted by validate_spec",
            path.display()
        );
    }
}
