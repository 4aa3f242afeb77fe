//! `--format`/`-f`: Go templates as Docker's CLI takes them, through the
//! `gotmpl` crate (a port of Go's text/template: `range`, `if`, `with`,
//! `index`, `printf`, `len`, variables, pipelines), plus the functions
//! Docker adds (`json`, `join`, `split`, `lower`, `upper`, `title`, `pad`,
//! `truncate`) and its `table` prefix: a header row, then the rows, in
//! aligned columns (`\t` separates them).
//!
//! The objects are the same JSON the commands print with `--format json`,
//! so every field a user sees there can be reached from a template.

use anyhow::Context as _;
use gotmpl::{Template, TemplateError, Value};
use serde_json::Value as Json;

/// A parsed `--format`.
pub enum Format {
    /// The built-in table (the command's own columns).
    Table,
    /// Each object as pretty JSON (inspect's default) or one line of it (lists).
    Json,
    /// A template, with `table` prefix or not.
    Template { tmpl: Template, table: bool },
}

impl Format {
    /// Parses `s`: empty or `table` is the command's table; `json`; else a
    /// template (`table …` prints a header row first). A template that does
    /// not parse is refused here, before anything is asked of the daemon.
    pub fn parse(s: &str) -> anyhow::Result<Format> {
        let t = s.trim();
        if t.is_empty() || t == "table" {
            return Ok(Format::Table);
        }
        if t == "json" || t == "{{json .}}" {
            return Ok(Format::Json);
        }
        let (table, body) = match s.strip_prefix("table ") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        // Docker's CLI reads "\t" and "\n" typed in a shell's single quotes as tab and newline.
        let body = body.replace("\\t", "\t").replace("\\n", "\n");
        let tmpl = with_docker_funcs(Template::new("format"))
            .parse(&body)
            .map_err(|e| anyhow::anyhow!("--format {s:?}: {e}"))?;
        Ok(Format::Template { tmpl, table })
    }

    /// Renders one object with a template (for a non-template format: its JSON).
    pub fn one(&self, v: &Json) -> anyhow::Result<String> {
        match self {
            Format::Template { tmpl, .. } => execute(tmpl, v),
            Format::Table | Format::Json => Ok(serde_json::to_string_pretty(v)?),
        }
    }

    /// Prints a list: `table` is drawn by `draw_table` (the command's
    /// columns); `json` one object a line; a template one rendering a line,
    /// `table …` with a header from `headers` (field → column title; other
    /// fields are titled in capitals).
    pub fn print_list(
        &self,
        items: &[Json],
        headers: &[(&str, &str)],
        draw_table: impl FnOnce(&[Json]),
    ) -> anyhow::Result<()> {
        match self {
            Format::Table => draw_table(items),
            Format::Json => {
                for v in items {
                    println!("{}", serde_json::to_string(v)?);
                }
            }
            Format::Template { tmpl, table } => {
                let mut lines = Vec::new();
                if *table {
                    lines.push(execute(tmpl, &header_object(items, headers))?);
                }
                for v in items {
                    lines.push(execute(tmpl, v)?);
                }
                if *table {
                    let rows: Vec<Vec<String>> =
                        lines.iter().map(|l| l.split('\t').map(String::from).collect()).collect();
                    print!("{}", columns(&rows));
                } else {
                    for l in lines {
                        println!("{l}");
                    }
                }
            }
        }
        Ok(())
    }
}

fn execute(tmpl: &Template, v: &Json) -> anyhow::Result<String> {
    let data = gotmpl::to_value(v).context("--format: the object cannot be a template's data")?;
    tmpl.execute_to_string(&data).map_err(|e| anyhow::anyhow!("--format: {e}"))
}

/// The object a `table` template's header row is rendered from: every
/// field of the rows, valued with its column title.
fn header_object(items: &[Json], headers: &[(&str, &str)]) -> Json {
    let mut m = serde_json::Map::new();
    for v in items.iter().take(1) {
        if let Some(o) = v.as_object() {
            for k in o.keys() {
                m.insert(k.clone(), Json::String(k.to_uppercase()));
            }
        }
    }
    for (field, title) in headers {
        m.insert(field.to_string(), Json::String(title.to_string()));
    }
    Json::Object(m)
}

/// Aligns rows into columns as Docker's CLI does (Go's tabwriter with
/// minimum width 10 and padding 3; the last column unpadded).
pub fn columns(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![7usize; n];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                let pad = widths[i] - c.chars().count();
                line.push_str(c);
                line.push_str(&" ".repeat(pad + 3));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn fail(msg: String) -> TemplateError {
    TemplateError::Exec(msg)
}

fn string_arg<'a>(name: &str, args: &'a [Value], i: usize) -> gotmpl::Result<&'a str> {
    args.get(i)
        .and_then(Value::as_str)
        .ok_or_else(|| fail(format!("{name}: argument {} must be a string", i + 1)))
}

fn int_arg(name: &str, args: &[Value], i: usize) -> gotmpl::Result<i64> {
    args.get(i)
        .and_then(Value::as_int)
        .ok_or_else(|| fail(format!("{name}: argument {} must be a number", i + 1)))
}

/// The functions Docker's CLI adds to Go's.
fn with_docker_funcs(t: Template) -> Template {
    t.func("json", |args| {
        let v = args.first().ok_or_else(|| fail("json: needs an argument".into()))?;
        serde_json::to_string(&to_json(v))
            .map(|s| Value::String(s.into()))
            .map_err(|e| fail(format!("json: {e}")))
    })
    .func("join", |args| {
        let Some(Value::List(items)) = args.first() else {
            return Err(fail("join: argument 1 must be a list".into()));
        };
        let sep = string_arg("join", args, 1)?;
        Ok(Value::String(items.iter().map(plain).collect::<Vec<_>>().join(sep).into()))
    })
    .func("split", |args| {
        let s = string_arg("split", args, 0)?;
        let sep = string_arg("split", args, 1)?;
        Ok(Value::List(s.split(sep).map(|p| Value::String(p.into())).collect::<Vec<_>>().into()))
    })
    .func("lower", |args| Ok(Value::String(string_arg("lower", args, 0)?.to_lowercase().into())))
    .func("upper", |args| Ok(Value::String(string_arg("upper", args, 0)?.to_uppercase().into())))
    .func("title", |args| {
        let s = string_arg("title", args, 0)?;
        let mut out = String::new();
        let mut start = true;
        for c in s.chars() {
            if start {
                out.extend(c.to_uppercase());
            } else {
                out.push(c);
            }
            start = c.is_whitespace();
        }
        Ok(Value::String(out.into()))
    })
    .func("pad", |args| {
        let s = string_arg("pad", args, 0)?;
        let (l, r) = (int_arg("pad", args, 1)?.max(0) as usize, int_arg("pad", args, 2)?.max(0) as usize);
        Ok(Value::String(format!("{}{s}{}", " ".repeat(l), " ".repeat(r)).into()))
    })
    .func("truncate", |args| {
        let s = string_arg("truncate", args, 0)?;
        let n = int_arg("truncate", args, 1)?.max(0) as usize;
        Ok(Value::String(s.chars().take(n).collect::<String>().into()))
    })
}

/// A value as `{{.}}` prints it, strings without quotes.
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.to_string(),
        other => other.to_string(),
    }
}

fn to_json(v: &Value) -> Json {
    match v {
        Value::Nil => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(n) => Json::from(*n),
        Value::Uint(n) => Json::from(*n),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::String(s) => Json::String(s.to_string()),
        Value::List(items) => Json::Array(items.iter().map(to_json).collect()),
        Value::Map(m) => Json::Object(m.iter().map(|(k, v)| (k.to_string(), to_json(v))).collect()),
        Value::Function(_) => Json::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::{Format, columns};
    use serde_json::json;

    fn render(format: &str, v: &serde_json::Value) -> anyhow::Result<String> {
        Format::parse(format)?.one(v)
    }

    fn inspect_like() -> serde_json::Value {
        json!({
            "Name": "/web",
            "Id": "0123456789abcdef",
            "NetworkSettings": {
                "Networks": {"a": {"IPAddress": "10.0.0.2"}, "b": {"IPAddress": "10.1.0.2"}},
                "Ports": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}
            },
            "Config": {"Env": ["A=1", "B=2"]},
            "Labels": {"com.example.team": "net"},
            "Count": 3
        })
    }

    #[test]
    fn the_snippets_docker_users_copy() {
        let v = inspect_like();
        // The most copied one: every network's address.
        assert_eq!(
            render("{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", &v).expect("test value"),
            "10.0.0.210.1.0.2"
        );
        assert_eq!(
            render("{{range $k, $v := .NetworkSettings.Networks}}{{$k}}={{$v.IPAddress}} {{end}}", &v)
                .expect("test value"),
            "a=10.0.0.2 b=10.1.0.2 "
        );
        assert_eq!(render(r#"{{index .Labels "com.example.team"}}"#, &v).expect("test value"), "net");
        assert_eq!(
            render(r#"{{(index (index .NetworkSettings.Ports "80/tcp") 0).HostPort}}"#, &v)
                .expect("test value"),
            "8080"
        );
        assert_eq!(render("{{json .Labels}}", &v).expect("test value"), r#"{"com.example.team":"net"}"#);
        assert_eq!(render(r#"{{join .Config.Env ","}}"#, &v).expect("test value"), "A=1,B=2");
        assert_eq!(render(r#"{{printf "%s has %d" .Name .Count}}"#, &v).expect("test value"), "/web has 3");
        assert_eq!(
            render("{{.Name | upper}} {{lower \"AB\"}} {{title \"a b\"}}", &v).expect("test value"),
            "/WEB ab A B"
        );
        assert_eq!(
            render(r#"{{truncate .Id 4}}|{{pad "x" 1 2}}|{{len (split "a:b:c" ":")}}"#, &v)
                .expect("test value"),
            "0123| x  |3"
        );
        assert_eq!(render("{{if eq .Count 3}}three{{else}}other{{end}}", &v).expect("test value"), "three");
        assert_eq!(render("name={{ .Name }}", &v).expect("test value"), "name=/web");
    }

    #[test]
    fn json_is_the_whole_object_and_bad_templates_say_why() {
        let v = inspect_like();
        assert_eq!(
            render("json", &v).expect("test value"),
            serde_json::to_string_pretty(&v).expect("test value")
        );
        for bad in ["{{.Name", "{{if}}", "{{nosuch}}"] {
            let e = render(bad, &v).err().unwrap_or_else(|| panic!("{bad} parsed")).to_string();
            assert!(e.contains("--format"), "{e}");
        }
        let e = render("{{nosuchfunc .Name}}", &v).expect_err("unknown function").to_string();
        assert!(e.contains("nosuchfunc"), "{e}");
    }

    #[test]
    fn table_templates_get_a_header_and_aligned_columns() {
        let f = Format::parse("table {{.Name}}\\t{{.Driver}}").expect("test value");
        let Format::Template { table, .. } = &f else { panic!("a template") };
        assert!(*table);
        let rows = vec![
            vec!["NAME".to_string(), "DRIVER".to_string()],
            vec!["bridge".to_string(), "bridge".to_string()],
            vec!["a-long-name".to_string(), "macvlan".to_string()],
        ];
        assert_eq!(columns(&rows), "NAME          DRIVER\nbridge        bridge\na-long-name   macvlan\n");
        let short = vec![vec!["ID".to_string(), "X".to_string()], vec!["a".to_string(), "b".to_string()]];
        assert_eq!(columns(&short), "ID        X\na         b\n", "at least 10 wide, as Docker's tables");
        assert!(matches!(Format::parse("").expect("test value"), Format::Table));
        assert!(matches!(Format::parse("table").expect("test value"), Format::Table));
        assert!(matches!(Format::parse("json").expect("test value"), Format::Json));
    }
}
