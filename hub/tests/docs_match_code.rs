//! The documentation is checked against the code: `docs/openapi.yaml` lists
//! exactly the routes the router matches, each with exactly the methods it
//! allows, and `docs/api.md` explains every error code.

use std::collections::BTreeSet;
use std::path::Path;

use ferry_common::problem::ErrorCode;
use ferry_hub::api::routes::{Route, TEMPLATES};

fn doc(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A concrete path for a template, for the router to match.
fn sample(template: &str) -> String {
    template
        .replace("{path}", "some/file.txt")
        .replace("{dir}", "some/dir")
        .replace(['{', '}'], "")
}

#[test]
fn openapi_lists_every_route_with_its_methods() {
    let spec: serde_json::Value =
        serde_yaml_ng::from_str(&doc("openapi.yaml")).expect("openapi.yaml is YAML");
    assert!(
        spec["openapi"]
            .as_str()
            .unwrap_or_default()
            .starts_with("3.1"),
        "OpenAPI 3.1"
    );
    let paths = spec["paths"].as_object().expect("a paths object");
    let documented: BTreeSet<&str> = paths.keys().map(String::as_str).collect();
    let routed: BTreeSet<&str> = TEMPLATES.iter().copied().collect();
    assert_eq!(
        documented, routed,
        "documented paths differ from the router's"
    );
    const VERBS: [&str; 8] = [
        "get", "put", "post", "delete", "head", "patch", "options", "trace",
    ];
    for template in TEMPLATES {
        let route = Route::parse(&sample(template))
            .unwrap()
            .unwrap_or_else(|| panic!("{template} does not route"));
        let allowed: BTreeSet<String> = route
            .allowed()
            .iter()
            .map(|m| m.as_str().to_lowercase())
            .collect();
        let ops: BTreeSet<String> = paths[*template]
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| VERBS.contains(&k.as_str()))
            .cloned()
            .collect();
        assert_eq!(ops, allowed, "methods of {template}");
    }
}

#[test]
fn api_md_explains_every_error_code() {
    let text = doc("api.md");
    for code in ErrorCode::ALL {
        assert!(
            text.contains(&format!("`{}`", code.as_str())),
            "docs/api.md lacks `{}`",
            code.as_str()
        );
    }
    let spec = doc("openapi.yaml");
    for code in ErrorCode::ALL {
        assert!(
            spec.contains(code.as_str()),
            "docs/openapi.yaml lacks {}",
            code.as_str()
        );
    }
}
