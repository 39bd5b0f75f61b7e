use super::*;

fn limits(global: usize, per_source: usize) -> Arc<ConnectionLimits> {
    ConnectionLimits::new(
        LimitConfig {
            global,
            per_source,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        },
        LimitMetrics::default(),
    )
}

#[test]
fn per_source_then_global() {
    let l = limits(5, 2);
    let a = SourceKey::Endpoint("x/a".into());
    let b = SourceKey::remote("10.201.0.1".parse().expect("ip"));
    let a1 = l.admit(a.clone()).expect("a 1");
    let _a2 = l.admit(a.clone()).expect("a 2");
    assert_eq!(l.admit(a.clone()).err(), Some(LimitRefusal::Source));
    let _b: Vec<_> = (0..2).map(|_| l.admit(b.clone()).expect("b")).collect();
    let c = SourceKey::remote("fd00:201::1".parse().expect("ip"));
    let _c = l.admit(c).expect("c");
    assert_eq!(l.held(), 5);
    let d = SourceKey::remote("10.201.0.2".parse().expect("ip"));
    assert_eq!(l.admit(d.clone()).err(), Some(LimitRefusal::Global));
    drop(a1);
    assert_eq!(l.held(), 4);
    let _a3 = l.admit(a).expect("a again after a release");
    assert_eq!(l.metrics().refused(LimitRefusal::Source), 1);
    assert_eq!(l.metrics().refused(LimitRefusal::Global), 1);
}

#[test]
fn an_ipv6_64_is_one_source() {
    let one = SourceKey::remote("fd00:201::1".parse().expect("ip"));
    let other = SourceKey::remote("fd00:201::ffff:1".parse().expect("ip"));
    let mapped = SourceKey::remote("::ffff:10.201.0.1".parse().expect("ip"));
    assert_eq!(one, other);
    assert_eq!(mapped, SourceKey::remote("10.201.0.1".parse().expect("ip")));
}

#[test]
fn defaults_leave_the_reserve() {
    let c = LimitConfig::for_descriptors(20_000);
    assert_eq!(c.global, (20_000 - DESCRIPTOR_RESERVE as usize) / 2);
    assert_eq!(c.per_source, c.global / PER_SOURCE_SHARE);
    let small = LimitConfig::for_descriptors(1024);
    assert_eq!(
        (small.global, small.per_source),
        (MIN_PER_SOURCE, MIN_PER_SOURCE)
    );
    let huge = LimitConfig::for_descriptors(1 << 30);
    assert_eq!(huge.global, MAX_GLOBAL);
    assert_eq!(
        parse_descriptor_limit(
            "Limit  Soft Limit Hard Limit Units\nMax open files            20000                20000                files\n"
        ),
        Some(20_000)
    );
    assert_eq!(
        parse_descriptor_limit("Max open files   unlimited unlimited files\n"),
        None
    );
}

#[tokio::test]
async fn idle_streams_time_out_and_busy_ones_do_not() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let metrics = LimitMetrics::default();
    let (a, mut b) = tokio::io::duplex(64);
    let mut a = IdleTimeout::new(a, Duration::from_millis(1500), metrics.clone());
    let mut buf = [0u8; 4];
    // Busy: a byte well within every timeout, four times over more than
    // the timeout in all.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        b.write_all(b"ping").await.expect("write");
        a.read_exact(&mut buf)
            .await
            .expect("read within the timeout");
    }
    assert_eq!(metrics.timeouts(TimeoutKind::Idle), 0);
    let err = a.read(&mut buf).await.expect_err("idle past the timeout");
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    assert_eq!(metrics.timeouts(TimeoutKind::Idle), 1);
    assert!(a.write_all(b"x").await.is_err(), "stays closed");
}
