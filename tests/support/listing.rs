//! Reading what `ls --json` and `history --json` say.

use serde_json::Value;

/// The service `name` in `ls --json`.
pub fn service<'a>(ls: &'a Value, name: &str) -> &'a Value {
    ls.as_array()
        .and_then(|services| services.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("service {name} not in ls: {ls:#}"))
}

/// The release `version` of service `name` in `ls --json`.
pub fn release<'a>(ls: &'a Value, name: &str, version: &str) -> &'a Value {
    service(ls, name)["releases"]
        .as_array()
        .and_then(|releases| releases.iter().find(|r| r["version"] == version))
        .unwrap_or_else(|| panic!("release {name} {version} not in ls: {ls:#}"))
}

/// (version, role) of every release of service `name` in `ls --json`, in
/// ls order.
pub fn roles(ls: &Value, name: &str) -> Vec<(String, String)> {
    service(ls, name)["releases"]
        .as_array()
        .map(|releases| {
            releases
                .iter()
                .map(|r| {
                    (
                        r["version"].as_str().unwrap_or_default().to_owned(),
                        r["role"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A (version, role) as [`roles`] lists it.
pub fn pair(version: &str, role: &str) -> (String, String) {
    (version.to_owned(), role.to_owned())
}

/// Whether every release of every service in `ls --json` is ready.
pub fn all_ready(ls: &Value) -> bool {
    ls.as_array().is_some_and(|services| {
        services.iter().all(|s| {
            s["releases"]
                .as_array()
                .is_some_and(|rs| rs.iter().all(|r| r["status"] == "ready"))
        })
    })
}

/// The action of every revision in `history --json`, newest first.
pub fn actions(history: &Value) -> Vec<String> {
    history
        .as_array()
        .expect("history is a list")
        .iter()
        .map(|r| {
            r["action"]
                .as_str()
                .expect("every revision has an action")
                .to_owned()
        })
        .collect()
}

/// (number, action) of every revision in `history --json`, newest first.
pub fn numbered_actions(history: &Value) -> Vec<(u64, String)> {
    history
        .as_array()
        .expect("history is a list")
        .iter()
        .map(|r| {
            (
                r["number"].as_u64().unwrap_or_default(),
                r["action"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}
