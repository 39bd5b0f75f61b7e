use super::{Debouncer, WatchedInputs};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[test]
fn events_close_together_make_one_batch_with_the_first_events_time() {
    let quiet = Duration::from_millis(5);
    let mut d = Debouncer::new(quiet);
    assert_eq!(d.deadline(), None, "nothing pending");
    let t0 = Instant::now();
    d.note(t0, Some(vec![PathBuf::from("/p/a.yaml")]), false);
    d.note(
        t0 + Duration::from_millis(3),
        Some(vec![PathBuf::from("/p/b.yaml")]),
        false,
    );
    // Not quiet long enough after the second event.
    assert!(d.take_due(t0 + Duration::from_millis(6)).is_none());
    assert_eq!(d.deadline(), Some(t0 + Duration::from_millis(8)));
    let batch = d.take_due(t0 + Duration::from_millis(8)).expect("due");
    assert_eq!(batch.first, t0);
    let paths: Vec<_> = batch.paths.expect("named paths").into_iter().collect();
    assert_eq!(
        paths,
        [PathBuf::from("/p/a.yaml"), PathBuf::from("/p/b.yaml")]
    );
    assert_eq!(d.deadline(), None, "taken");
    assert!(d.take_due(t0 + Duration::from_secs(1)).is_none());
}

#[test]
fn a_steady_stream_is_cut_at_ten_quiet_periods_and_a_rescan_covers_everything() {
    let quiet = Duration::from_millis(5);
    let mut d = Debouncer::new(quiet);
    let t0 = Instant::now();
    let mut t = t0;
    let mut batch = None;
    for _ in 0..100 {
        d.note(t, Some(vec![PathBuf::from("/p/a.yaml")]), false);
        t += Duration::from_millis(2);
        if let Some(b) = d.take_due(t) {
            batch = Some(b);
            break;
        }
    }
    let batch = batch.expect("a stream of events is not held back forever");
    assert_eq!(batch.first, t0);
    assert!(t - t0 <= quiet * 10 + Duration::from_millis(2));
    // A rescan (lost events) makes the batch cover everything.
    d.note(t, Some(vec![PathBuf::from("/p/a.yaml")]), false);
    d.note(t, None, false);
    d.note(t, Some(vec![PathBuf::from("/p/b.yaml")]), false);
    let batch = d.take_due(t + quiet).expect("due");
    assert_eq!(batch.paths, None);
}

#[test]
fn only_the_inputs_and_files_under_policy_directories_concern_the_daemon() {
    let w = WatchedInputs {
        topology: PathBuf::from("/lab/topology.yaml"),
        policies: vec![PathBuf::from("/lab/policy.yaml"), PathBuf::from("/pol")],
    };
    assert!(w.concerns(&PathBuf::from("/lab/topology.yaml")));
    assert!(w.concerns(&PathBuf::from("/lab/policy.yaml")));
    assert!(w.concerns(&PathBuf::from("/pol/ns/a.yaml")));
    assert!(!w.concerns(&PathBuf::from("/lab/policy.tmp")));
    assert!(!w.concerns(&PathBuf::from("/lab/agent.log")));
}

#[test]
fn a_rename_over_a_watched_file_reaches_the_loop() {
    let dir = std::env::temp_dir().join(format!("portcullis-watch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (topology, policy) = (dir.join("topology.yaml"), dir.join("policy.yaml"));
    std::fs::write(&topology, "pods: []\n").unwrap();
    std::fs::write(&policy, "").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let inputs = WatchedInputs {
        topology: topology.clone(),
        policies: vec![policy.clone()],
    };
    let _w = super::start(inputs, Duration::from_millis(5), tx).expect("watcher");
    // A file beside the inputs is not reported; reading an input is not.
    std::fs::write(dir.join("notes.txt"), "x").unwrap();
    let _ = std::fs::read(&policy).unwrap();
    let tmp = dir.join("policy.tmp");
    std::fs::write(&tmp, "a: 1\n").unwrap();
    std::fs::rename(&tmp, &policy).unwrap();
    let got = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("an event batch");
    let super::DaemonEvent::Files(batch) = got else {
        panic!("a file batch")
    };
    assert_eq!(batch.paths, Some([policy.clone()].into_iter().collect()));
    std::fs::write(&topology, "pods: []\nnamespaces: []\n").unwrap();
    let got = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("an event batch");
    let super::DaemonEvent::Files(batch) = got else {
        panic!("a file batch")
    };
    assert_eq!(batch.paths, Some([topology].into_iter().collect()));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_event_that_completes_a_file_makes_the_batch_due_at_once() {
    let quiet = Duration::from_millis(5);
    let mut d = Debouncer::new(quiet);
    let t0 = Instant::now();
    // Written (not yet complete), then renamed into place.
    d.note(t0, Some(vec![PathBuf::from("/p/a.yaml")]), false);
    assert_eq!(d.deadline(), Some(t0 + quiet));
    let t1 = t0 + Duration::from_millis(1);
    d.note(t1, Some(vec![PathBuf::from("/p/a.yaml")]), true);
    assert_eq!(d.deadline(), Some(t1), "due at the completing event");
    let batch = d.take_due(t1).expect("due");
    assert_eq!(batch.first, t0);
    // A write after a completed one waits for quiet again.
    d.note(t1, Some(vec![PathBuf::from("/p/b.yaml")]), true);
    d.note(t1, Some(vec![PathBuf::from("/p/c.yaml")]), false);
    assert_eq!(d.deadline(), Some(t1 + quiet));
}
