//! The loopback STS is the test kit's: AssumeRole in the AWS Query protocol,
//! recording every request and failing on cue.

pub use attestation_broker::testkit::sts::{Fault, Sts as StsServer, StsIssued, StsRequest};
