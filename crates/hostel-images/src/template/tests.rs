use super::*;

fn vals(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn builtin(name: &str) -> Template {
    Template::builtin()
        .into_iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("builtin template {name}"))
}

#[test]
fn builtin_templates_parse_and_name_their_images() {
    let names: Vec<String> = Template::builtin().into_iter().map(|t| t.image).collect();
    assert_eq!(names, vec!["debian-12-web", "debian-12-database"]);
    let dir = hostel_testkit::workspace_root().join("images/templates");
    assert_eq!(Template::load_dir(&dir).unwrap(), {
        let mut b = Template::builtin();
        b.sort_by(|a, b| a.name.cmp(&b.name));
        b
    });
}

#[test]
fn web_page_is_substituted_verbatim_even_with_yaml_and_placeholders_in_it() {
    let t = builtin("web");
    assert_eq!(t.ports[0].port, 80);
    let page = "<h1>Hi: {{index_html}}</h1>\n- not: yaml\n\"quotes\"";
    let cc = t.render(&vals(&[("index_html", page)])).unwrap();
    assert_eq!(cc["write_files"][0]["path"], "/var/www/html/index.html");
    assert_eq!(cc["write_files"][0]["content"], page);
    // Default when not given.
    let cc = t.render(&BTreeMap::new()).unwrap();
    assert!(cc["write_files"][0]["content"]
        .as_str()
        .unwrap()
        .contains("It works"));
}

#[test]
fn database_parameters_are_checked_and_reach_psql_as_argv() {
    let t = builtin("database");
    assert_eq!(t.ports[0].port, 5432);
    let ok = vals(&[
        ("db_name", "shop"),
        ("db_user", "shop_owner"),
        ("db_password", "s3cret pass'word"),
    ]);
    let cc = t.render(&ok).unwrap();
    let runcmd = cc["runcmd"].as_array().unwrap();
    // The VM's own TLS key pair is made before the server restarts with it.
    assert_eq!(runcmd[0][0], "make-ssl-cert");
    let psql = runcmd
        .iter()
        .filter_map(Value::as_array)
        .find(|c| c.contains(&Value::from("psql")))
        .unwrap();
    assert!(psql.contains(&Value::from("db_password=s3cret pass'word")));
    assert!(psql.contains(&Value::from("db_name=shop")));

    for (k, v, why) in [
        ("db_name", "Shop; DROP", "identifier"),
        ("db_password", "short", "8-128"),
        ("db_password", "line\nbreak!!", "control"),
    ] {
        let mut bad = ok.clone();
        bad.insert(k.into(), v.into());
        let err = t.render(&bad).unwrap_err().to_string();
        assert!(err.contains(why), "{err}");
    }
    let mut missing = ok.clone();
    missing.remove("db_user");
    assert!(t
        .render(&missing)
        .unwrap_err()
        .to_string()
        .contains("required"));
    let mut extra = ok;
    extra.insert("nope".into(), "x".into());
    assert!(t
        .render(&extra)
        .unwrap_err()
        .to_string()
        .contains("unknown"));
}

#[test]
fn unknown_placeholders_and_bad_packages_are_refused_at_load() {
    let bad = r#"
name = "x"
base = "debian-12"
image = "debian-12-x"
[cloud_config]
runcmd = [["echo", "{{nope}}"]]
"#;
    let err = Template::parse(bad).unwrap_err().to_string();
    assert!(err.contains("nope"), "{err}");
    let bad = "name = \"x\"\nbase = \"debian-12\"\nimage = \"y\"\npackages = [\"a b\"]\n";
    assert!(Template::parse(bad).is_err());
}

#[test]
fn apply_merges_into_a_seed() {
    let t = builtin("web");
    let mut seed = SeedConfig {
        instance_id: "i-1".into(),
        hostname: "site".into(),
        runcmd: vec![crate::seed::RunCmd::Shell("echo first".into())],
        ..Default::default()
    };
    t.apply(&vals(&[("index_html", "hello")]), &mut seed)
        .unwrap();
    let files = seed.render().unwrap();
    assert!(files.user_data.contains("echo first"));
    assert!(files.user_data.contains("reload-or-restart"));
    assert!(files.user_data.contains("\"content\": \"hello\""));
}
