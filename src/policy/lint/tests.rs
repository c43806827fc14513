//! Tests of `policy check`.
