//! The first question of a message, as the upstream sockets handle it:
//! where it ends, whether an answer carries it (without case, or exactly
//! when its case was randomized), and its name in a random letter case
//! (DNS 0x20).

#[cfg(test)]
mod tests;

use std::hash::{BuildHasher, RandomState};

use super::parse::HEADER_LEN;

/// Whether `answer` carries the question (`QDCOUNT` + first question)
/// that was forwarded; names compare case-insensitively. A header-only
/// answer (no question: some servers' FORMERR/NOTIMP) matches by id.
pub(super) fn answers_question(question: &[u8], answer: &[u8]) -> bool {
    let qdcount = &answer[4..6];
    if qdcount == [0, 0] {
        return true;
    }
    let (count, first) = question.split_at(2);
    qdcount == count
        && answer
            .get(HEADER_LEN..HEADER_LEN + first.len())
            .is_some_and(|a| a.eq_ignore_ascii_case(first))
}

/// Whether `answer` carries exactly (case included) the question that was
/// forwarded with a randomized case. A header-only answer matches by id
/// only when it carries no records either.
pub(super) fn answers_question_exactly(question: &[u8], answer: &[u8]) -> bool {
    let qdcount = &answer[4..6];
    if qdcount == [0, 0] {
        return answer[6..12] == [0; 6];
    }
    let (count, first) = question.split_at(2);
    qdcount == count
        && answer
            .get(HEADER_LEN..HEADER_LEN + first.len())
            .is_some_and(|a| a == first)
}

/// Flips the case of the letters of an uncompressed name (labels, as in a
/// query's question) at random: one bit of `seed` per letter, re-drawn
/// from `keys` every 64 letters.
pub(super) fn randomize_name_case(name: &mut [u8], seed: u64, keys: &RandomState) {
    let mut bits = seed;
    let mut used = 0u32;
    let mut i = 0;
    while let Some(&len) = name.get(i) {
        let len = usize::from(len);
        if len == 0 || len & 0xc0 != 0 {
            return;
        }
        let end = (i + 1 + len).min(name.len());
        for b in &mut name[i + 1..end] {
            if b.is_ascii_alphabetic() {
                if used == 64 {
                    bits = keys.hash_one(bits);
                    used = 0;
                }
                if bits & 1 == 1 {
                    *b ^= 0x20;
                }
                bits >>= 1;
                used += 1;
            }
        }
        i = end;
    }
}

/// The end of a message's first question (name as uncompressed labels,
/// type, class); `None` when it has none or it does not end there.
pub(super) fn first_question_end(message: &[u8]) -> Option<usize> {
    let mut i = HEADER_LEN;
    loop {
        let len = usize::from(*message.get(i)?);
        i += 1;
        if len == 0 {
            break;
        }
        if len & 0xc0 != 0 {
            return None;
        }
        i += len;
    }
    let end = i + 4;
    (end <= message.len()).then_some(end)
}
