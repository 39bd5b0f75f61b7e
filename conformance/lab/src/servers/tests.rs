use super::*;

#[test]
fn processes_are_killed_and_reaped_on_drop() {
    let mut procs = Processes::new();
    procs
        .spawn(Command::new("sleep").arg("30"), "sleep")
        .expect("spawn sleep");
    let pid = procs.0[0].id();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    let started = Instant::now();
    drop(procs);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "sleep {pid} outlived its Processes"
    );
}

#[test]
fn a_missing_program_says_what_to_install() {
    let mut procs = Processes::new();
    let e = procs
        .spawn(
            &mut Command::new("/nonexistent/knotd"),
            "knotd (apt-get install knot)",
        )
        .expect_err("no such program");
    assert!(format!("{e:#}").starts_with("starting knotd (apt-get install knot)"));
}

#[test]
fn haproxy_binds_every_port_in_both_families() {
    let c = haproxy_config(&BTreeSet::from([80, 8080]));
    assert!(
        c.contains("  bind :::80 v4v6\n  bind :::8080 v4v6\n"),
        "{c}"
    );
    assert!(c.ends_with("http-request return status 200 content-type text/plain string \"ok\"\n"));
}

#[test]
fn knot_and_nginx_keep_their_files_in_the_given_directory() {
    let dir = Path::new("/run/x");
    let k = knot_config(dir, "pc-world");
    assert!(k.contains("rundir: \"/run/x/knot-pc-world\""), "{k}");
    assert!(k.contains("file: \"/run/x/root.zone\""), "{k}");
    let n = nginx_config(dir, "pc-pod1", &BTreeSet::from([443]), "nginx");
    assert!(n.contains("listen 0.0.0.0:443 ssl http2;"), "{n}");
    assert!(n.contains("listen [::]:443 ssl http2 ipv6only=on;"), "{n}");
    assert!(n.contains("ssl_certificate /run/x/nginx.crt;"), "{n}");
    assert!(n.contains("pid /run/x/nginx-pc-pod1.pid;"), "{n}");
}

#[test]
fn commands_run_inside_the_namespace() {
    let c = in_ns("pc-pod3", "haproxy");
    let args: Vec<_> = c.get_args().collect();
    assert_eq!(c.get_program(), "ip");
    assert_eq!(args, ["netns", "exec", "pc-pod3", "haproxy"]);
}
