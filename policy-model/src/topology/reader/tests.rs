use super::*;
use proptest::prelude::*;

/// Both readings of `text`: the reader's and the whole parse's, as
/// comparable text (the topology's debug form, or the error).
fn both(reader: &mut TopologyReader, text: &str) -> (String, String) {
    let show = |r: Result<Topology, TopologyError>| match r {
        Ok(t) => format!("{t:?}"),
        Err(e) => format!("error: {e}"),
    };
    (
        show(reader.parse(text, "t.yaml")),
        show(Topology::from_yaml(text, "t.yaml")),
    )
}

fn same(text: &str) -> Option<usize> {
    let mut reader = TopologyReader::default();
    let (a, b) = both(&mut reader, text);
    assert_eq!(a, b, "for:\n{text}");
    reader.entries_parsed()
}

const BLOCK: &str = "\
# a comment first
namespaces:
  - {name: a, labels: {team: x}}
pods:
  # a comment in the list
  - namespace: a
    name: web
    labels:
      app: web
    ip: 10.200.1.1

  - {namespace: a, name: db, ip: 10.200.1.2}
node: {ips: [10.200.0.1]}
";

#[test]
fn a_plain_file_is_read_entry_by_entry_with_the_whole_parses_result() {
    assert_eq!(same(BLOCK), Some(2));
    assert_eq!(same(&BLOCK.replace('\n', "\r\n")), Some(2));
    assert_eq!(same(&format!("\u{feff}{BLOCK}")), Some(2));
    // Entries at the key's own indentation are YAML too: parsed whole.
    let flush = "namespaces: [{name: a}]\npods:\n- {namespace: a, name: p, ip: 10.200.1.1}\n";
    assert_eq!(same(flush), None);
}

#[test]
fn what_the_cut_cannot_be_sure_of_is_parsed_whole() {
    let cases = [
        // document marker, directive
        format!("---\n{BLOCK}"),
        format!("%YAML 1.2\n---\n{BLOCK}"),
        // pods written inline, twice, or empty
        "namespaces: [{name: a}]\npods: [{namespace: a, name: p}]\n".to_string(),
        format!("{BLOCK}pods:\n  - {{namespace: a, name: q}}\n"),
        "namespaces: [{name: a}]\npods:\nnode: {ips: []}\n".to_string(),
        // an anchor used by another entry
        "namespaces: [{name: a}]\npods:\n  - &p {namespace: a, name: p}\n  - *p\n".to_string(),
        // a flow mapping at the top
        "{namespaces: [{name: a}], pods: [{namespace: a, name: p}]}\n".to_string(),
        // a quoted key
        "\"namespaces\": [{name: a}]\npods:\n  - {namespace: a, name: p}\n".to_string(),
    ];
    for text in &cases {
        assert_eq!(same(text), None, "{text}");
    }
}

#[test]
fn errors_read_as_the_whole_parses_do() {
    let cases = [
        // an entry that does not parse, an unknown field in an entry and
        // at the top, a validation error (unknown namespace), a pod twice
        BLOCK.replace("ip: 10.200.1.2", "ip: not-an-ip"),
        BLOCK.replace("name: db,", "name: db, colour: red,"),
        format!("{BLOCK}colour: red\n"),
        BLOCK.replace("namespace: a, name: db", "namespace: b, name: db"),
        BLOCK.replace("name: db", "name: web"),
        // less indented than the first entry
        "namespaces: [{name: a}]\npods:\n    - {namespace: a, name: p}\n  - {namespace: a, name: q}\n"
            .to_string(),
    ];
    for text in &cases {
        same(text);
    }
}

#[test]
fn an_edit_parses_only_the_entries_that_changed() {
    let mut reader = TopologyReader::default();
    let mut text = String::from("namespaces: [{name: a}]\npods:\n");
    for i in 0..50 {
        text.push_str(&format!(
            "  - {{namespace: a, name: p{i}, ip: 10.200.1.{i}}}\n"
        ));
    }
    let (a, b) = both(&mut reader, &text);
    assert_eq!(a, b);
    assert_eq!(reader.entries_parsed(), Some(50));
    // One pod relabelled, one added, one removed.
    let edited = text
        .replace("name: p7,", "name: p7, labels: {app: x},")
        .replace("  - {namespace: a, name: p9, ip: 10.200.1.9}\n", "")
        + "  - {namespace: a, name: new, ip: 10.200.2.1}\n";
    let (a, b) = both(&mut reader, &edited);
    assert_eq!(a, b);
    assert_eq!(reader.entries_parsed(), Some(2));
    let names = |pods: &[Arc<PodSpec>]| {
        let mut v: Vec<String> = pods.iter().map(|p| p.name.clone()).collect();
        v.sort();
        v
    };
    let changes = reader.pod_changes().expect("both texts read by entry");
    assert_eq!(names(&changes.fresh), ["new", "p7"]);
    assert_eq!(names(&changes.gone), ["p7", "p9"]);
    // Unchanged: nothing parsed, nothing changed.
    let (a, b) = both(&mut reader, &edited);
    assert_eq!(a, b);
    assert_eq!(reader.entries_parsed(), Some(0));
    let changes = reader.pod_changes().expect("read by entry");
    assert!(changes.fresh.is_empty() && changes.gone.is_empty());
    // A rejected text: the next read's changes are not known (they would
    // be relative to the rejected text, not to the topology in force).
    let dup = edited.clone() + "  - {namespace: a, name: p1, ip: 10.200.9.9}\n";
    assert!(reader.parse(&dup, "t.yaml").is_err());
    assert!(reader.pod_changes().is_none());
    reader.parse(&edited, "t.yaml").expect("valid");
    assert!(reader.pod_changes().is_none());
    reader.parse(&edited, "t.yaml").expect("valid");
    assert!(reader.pod_changes().is_some());
    // A text that must be parsed whole forgets the entries; the next plain
    // text parses them all again.
    both(&mut reader, &format!("---\n{edited}"));
    assert_eq!(reader.entries_parsed(), None);
    both(&mut reader, &edited);
    assert_eq!(reader.entries_parsed(), Some(50));
}

/// One pod entry written in one of several styles, with a flaw the
/// validation must find (`flaw` 1..=6) or none (0, 7: valid ports).
fn entry(i: usize, labels: &[(u8, u8)], style: u8, comment: bool, flaw: u8) -> String {
    let ip = match flaw {
        2 => "10.200.0.1".to_string(),
        _ => format!("10.200.{}.{}", i / 200, i % 200 + 1),
    };
    let name = match flaw {
        1 => "p0".to_string(),
        _ => format!("p{i}"),
    };
    let ns = match flaw {
        3 => "ns9".to_string(),
        _ => format!("ns{}", i % 3),
    };
    let ports = match flaw {
        4 => "[{containerPort: 0}]",
        5 => "[{containerPort: 80, protocol: ICMP}]",
        6 => "[{name: a, containerPort: 80}, {name: a, containerPort: 81}]",
        7 => "[{name: a, containerPort: 80, protocol: udp}, {containerPort: 81}]",
        _ => "[]",
    };
    let mut s = String::new();
    if comment {
        s.push_str("  # pod\n");
    }
    match style % 3 {
        0 => {
            let l: Vec<String> = labels.iter().map(|(k, v)| format!("k{k}: v{v}")).collect();
            s.push_str(&format!(
                "  - {{namespace: {ns}, name: {name}, ip: {ip}, labels: {{{}}}, ports: {ports}}}\n",
                l.join(", ")
            ));
        }
        1 => {
            s.push_str(&format!("  - namespace: {ns}\n    name: {name}\n"));
            if !labels.is_empty() {
                s.push_str("    labels:\n");
                for (k, v) in labels {
                    s.push_str(&format!("      k{k}: \"v{v}\"\n"));
                }
            }
            s.push_str(&format!("    ips:\n      - {ip}\n    ports: {ports}\n"));
        }
        _ => {
            s.push_str(&format!("  -\n    namespace: {ns}\n    name: {name}\n"));
            s.push_str(&format!("    ip: {ip}\n    ports: {ports}\n\n"));
        }
    }
    s
}

/// A generated pod: label pairs, entry style, whether a comment precedes
/// it, its flaw (see [`entry`]).
type GenPod = (Vec<(u8, u8)>, u8, bool, u8);

/// The topology text: the pods, with the node section (`tail`) or not,
/// and namespace ns2 listed or not (`all_namespaces`: without it, the pods
/// in ns2 are invalid).
fn render(pods: &[GenPod], tail: bool, all_namespaces: bool) -> String {
    let mut s = String::from("namespaces:\n  - {name: ns0}\n  - {name: ns1}\n");
    if all_namespaces {
        s.push_str("  - {name: ns2}\n");
    }
    s.push_str("pods:\n");
    for (i, (labels, style, comment, flaw)) in pods.iter().enumerate() {
        s.push_str(&entry(i, labels, *style, *comment, *flaw));
    }
    if tail {
        s.push_str("# the node\nnode:\n  ips: [10.200.0.1]\n");
    }
    s
}

fn pod() -> impl Strategy<Value = GenPod> {
    (
        prop::collection::vec((0u8..4, 0u8..4), 0..3),
        0u8..3,
        prop::bool::weighted(0.1),
        prop_oneof![40 => Just(0u8), 1 => 1u8..8],
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// A run of edits read by one reader gives, at every step, what the
    /// whole parse gives.
    #[test]
    fn a_run_of_edits_reads_as_the_whole_parse(
        start in prop::collection::vec(pod(), 0..12),
        edits in prop::collection::vec(
            (0usize..16, pod(), 0u8..3, any::<bool>(), prop::bool::weighted(0.8)),
            1..12,
        ),
    ) {
        let mut reader = TopologyReader::default();
        let mut pods = start;
        let mut tail = true;
        let (a, b) = both(&mut reader, &render(&pods, tail, true));
        prop_assert_eq!(a, b);
        for (at, p, what, t, all_ns) in edits {
            match what {
                0 => { let i = at.min(pods.len()); pods.insert(i, p); }
                1 if !pods.is_empty() => { let i = at % pods.len(); pods.remove(i); }
                _ if !pods.is_empty() => { let i = at % pods.len(); pods[i] = p; }
                _ => pods.push(p),
            }
            tail = t;
            let (a, b) = both(&mut reader, &render(&pods, tail, all_ns));
            prop_assert_eq!(a, b);
        }
    }
}
