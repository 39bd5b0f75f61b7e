//! The first question delimited and matched, case randomization.

use hickory_proto::rr::RecordType;

use super::*;
use crate::dns::tests::query_bytes;

#[test]
fn the_first_question_is_delimited_and_matched_without_case() {
    use super::{answers_question, first_question_end};
    let q = query_bytes(7, &[("Www.Example.COM.", RecordType::A)]);
    let end = first_question_end(&q).expect("one uncompressed question");
    assert_eq!(end, q.len());
    let question = [&q[4..6], &q[12..end]].concat();
    let mut answer = query_bytes(7, &[("www.example.com.", RecordType::A)]);
    answer[2] |= 0x80;
    assert!(answers_question(&question, &answer));
    let other = query_bytes(7, &[("www.example.org.", RecordType::A)]);
    assert!(!answers_question(&question, &other));
    let aaaa = query_bytes(7, &[("www.example.com.", RecordType::AAAA)]);
    assert!(!answers_question(&question, &aaaa));
    // A header-only error answer matches by id alone.
    let mut header_only = answer[..12].to_vec();
    header_only[4..6].copy_from_slice(&[0, 0]);
    assert!(answers_question(&question, &header_only));
    // A compression pointer in the first name: not delimited.
    let mut pointer = q[..12].to_vec();
    pointer.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
    assert_eq!(first_question_end(&pointer), None);
    assert_eq!(first_question_end(&q[..14]), None);
}

#[test]
fn randomized_case_changes_only_letters_and_the_answer_must_echo_it() {
    use super::{answers_question, answers_question_exactly, randomize_name_case};
    use std::hash::RandomState;

    let query = query_bytes(
        1,
        &[("abcdefghijklmnopqrstuvwxyz-0123.example.", RecordType::A)],
    );
    let end = first_question_end(&query).expect("one question");
    let keys = RandomState::new();
    let mut differing = 0;
    for seed in 0..32u64 {
        let mut out = query.clone();
        randomize_name_case(
            &mut out[12..end],
            seed.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            &keys,
        );
        assert!(out.eq_ignore_ascii_case(&query), "only the case changes");
        assert_eq!(out[end..], query[end..]);
        if out != query {
            differing += 1;
        }
        let forwarded = [&out[4..6], &out[12..end]].concat();
        let mut echo = out.clone();
        echo[2] |= 0x80;
        assert!(answers_question_exactly(&forwarded, &echo));
        // The attacker's guess: the name in lowercase.
        let mut guess = query.clone();
        guess[2] |= 0x80;
        guess[..2].copy_from_slice(&out[..2]);
        assert!(answers_question(&forwarded, &guess));
        if out != query {
            assert!(!answers_question_exactly(&forwarded, &guess));
        }
    }
    assert!(
        differing >= 30,
        "the case is drawn at random: {differing}/32"
    );
    // A header-only answer with records does not match by id alone.
    let forwarded = [&query[4..6], &query[12..end]].concat();
    let mut bare = vec![0u8; 12];
    bare[2] = 0x80;
    assert!(answers_question_exactly(&forwarded, &bare));
    bare[7] = 1;
    assert!(!answers_question_exactly(&forwarded, &bare));
}
