//! Tests of the language algebra and of `policy diff`.
