use super::*;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "portcullis-state-dir-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

#[test]
fn a_client_uses_the_recorded_directory_while_it_exists_else_the_default() {
    let run = scratch("record");
    let dir = run.join("agent-state");
    std::fs::create_dir_all(&dir).expect("state directory");
    let pointer = run.join("nested").join("state-dir");
    assert_eq!(locate(None, &pointer), PathBuf::from(DEFAULT));
    record(&pointer, &dir).expect("recorded (the parent is made)");
    assert_eq!(locate(None, &pointer), dir);
    assert_eq!(
        locate(Some("/given".into()), &pointer),
        PathBuf::from("/given")
    );
    std::fs::remove_dir_all(&dir).expect("removed");
    assert_eq!(locate(None, &pointer), PathBuf::from(DEFAULT));
    let _ = std::fs::remove_dir_all(&run);
}
