//! `--format` for inspect commands: `json` (the default: the whole object,
//! pretty-printed) or a template with Docker's most used form, field paths
//! like `{{.NetworkSettings.SandboxKey}}` and `{{json .IPAM}}`. Other Go
//! template syntax is refused with a clear error.

use anyhow::bail;
use serde_json::Value;

/// Renders one object with `format`.
pub fn render(format: &str, v: &Value) -> anyhow::Result<String> {
    if format == "json" || format.is_empty() {
        return Ok(serde_json::to_string_pretty(v)?);
    }
    let mut out = String::new();
    let mut rest = format;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find("}}") else {
            bail!("--format {format:?}: unclosed {{{{");
        };
        let action = rest[start + 2..start + end].trim();
        out.push_str(&action_value(format, action, v)?);
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn action_value(format: &str, action: &str, v: &Value) -> anyhow::Result<String> {
    let (as_json, path) = match action.strip_prefix("json ") {
        Some(p) => (true, p.trim()),
        None => (false, action),
    };
    let Some(path) = path.strip_prefix('.') else {
        bail!(
            "--format {format:?}: only {{{{.Field.Path}}}} and {{{{json .Field}}}} are supported, not {{{{{action}}}}}"
        );
    };
    let mut cur = v;
    for key in path.split('.').filter(|k| !k.is_empty()) {
        cur = match cur.get(key) {
            Some(next) => next,
            None => bail!("--format {format:?}: no field {key:?}"),
        };
    }
    Ok(match (as_json, cur) {
        (true, x) => serde_json::to_string(x)?,
        (false, Value::String(s)) => s.clone(),
        (false, Value::Null) => "<no value>".to_string(),
        (false, x) => x.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn field_paths_and_json() {
        let v = serde_json::json!({"Name": "/web", "NetworkSettings": {"Networks": {"n": {"IPAddress": "10.0.0.2"}}}, "Labels": {"a": "b"}});
        assert_eq!(render("{{.NetworkSettings.Networks.n.IPAddress}}", &v).expect("path"), "10.0.0.2");
        assert_eq!(render("name={{ .Name }}", &v).expect("spaces"), "name=/web");
        assert_eq!(render("{{json .Labels}}", &v).expect("json"), r#"{"a":"b"}"#);
        assert!(render("{{range .X}}", &v).is_err());
        assert!(render("{{.Nope}}", &v).expect_err("missing").to_string().contains("no field"));
    }
}
