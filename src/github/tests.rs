//! Tests of the App client against the loopback stand-in for GitHub.
