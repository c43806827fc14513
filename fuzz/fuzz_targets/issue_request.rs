//! Request decoding of `POST /issue` on attacker-controlled input: the query
//! (`?format=`), `Content-Type`, `Authorization` and the body, through the
//! handler's own functions (`fuzz_decode_issue_request`).
//!
//! Input format, chosen so that seeds stay readable: three lines
//! `content-type\nauthorization\nquery\n` (an empty line means "absent"), then
//! the body. Input with fewer than three newlines is a body sent as
//! `application/json` with no other header.
//!
//! Invariants checked: nothing panics; a body the handler accepts is a JSON
//! object (so no other shape slips through serde's struct-from-array reading).

#![no_main]

use attestation_broker::http::error::ApiError;
use attestation_broker::http::issue::fuzz_decode_issue_request;
use libfuzzer_sys::fuzz_target;

fn line(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = data.iter().position(|byte| *byte == b'\n')?;
    Some((&data[..end], &data[end + 1..]))
}

fn present(value: &[u8]) -> Option<&[u8]> {
    (!value.is_empty()).then_some(value)
}

fuzz_target!(|data: &[u8]| {
    let parsed = line(data).and_then(|(content_type, rest)| {
        let (authorization, rest) = line(rest)?;
        let (query, body) = line(rest)?;
        Some((present(content_type), present(authorization), present(query), body))
    });
    let (content_type, authorization, query, body) = match parsed {
        Some(parts) => parts,
        None => (Some(&b"application/json"[..]), None, None, data),
    };
    let query = query.map(String::from_utf8_lossy);
    let outcome = fuzz_decode_issue_request(query.as_deref(), content_type, authorization, body);
    match outcome {
        Ok(_) => {
            // Accepted with a token: the body was blank or a JSON object.
            let first = body.iter().find(|byte| !byte.is_ascii_whitespace());
            assert!(
                first.is_none() || first == Some(&b'{'),
                "accepted a body that is not an object"
            );
        }
        Err(
            ApiError::MalformedBody | ApiError::MissingToken | ApiError::UnsupportedMediaType,
        ) => {}
        Err(other) => panic!("decoding produced an unexpected error: {other:?}"),
    }
});
