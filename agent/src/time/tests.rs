use super::Rfc3339;

#[test]
fn formats_utc_with_milliseconds() {
    assert_eq!(Rfc3339(0).to_string(), "1970-01-01T00:00:00.000Z");
    // 2024-02-29T23:59:59.999Z, a leap day.
    let ns = (1_709_251_199u128 * 1000 + 999) * 1_000_000;
    assert_eq!(Rfc3339(ns).to_string(), "2024-02-29T23:59:59.999Z");
}
