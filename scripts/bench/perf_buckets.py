#!/usr/bin/env python3
"""Native CPU time per issuance, by purpose, from `perf record` call stacks.

    perf script -F tid,ip,sym,dso -i perf.data > perf.txt
    perf_buckets.py perf.txt CPU_US_PER_ISSUANCE

perf samples the broker at a fixed rate on its CPU clock, user and kernel
alike, with each sample's call stack (DWARF unwinding). Every sample gets one
purpose: the first purpose in PURPOSES (in that order) any frame of its stack
names, so serde_json under the audit line counts as the audit line and the
SHA-256 under the SigV4 signer as signing. A sample whose leaf frame is in the
kernel is kernel time of that purpose (a `writev` of the STS request is the
STS HTTP client's kernel time). Shares of samples times the scenario's broker
CPU per issuance (utime + stime over the timed phase, divided by the
issuances) give microseconds per issuance.

Stacks deeper than perf's copied stack (16 KiB) lose their outer frames; such
a sample is classified by the frames it kept, and falls to "other" only when
none names a purpose.
"""

import collections
import sys

# (purpose, substrings of a frame's symbol that name it), first match wins.
PURPOSES = [
    ("audit line and logging (tracing JSON, stdout)",
     ["attestation_broker::audit", "tracing_subscriber::fmt", "tracing_core::event"]),
    ("metrics (prometheus)", ["prometheus::", "attestation_broker::metrics"]),
    ("STS: SigV4 signing", ["aws_sigv4::", "SigV4Signer"]),
    ("STS: (de)serialize (query body, XML answer)",
     ["aws_smithy_xml::", "xmlparser::", "aws_smithy_query::", "protocol_serde",
      "AssumeRoleRequestSerializer", "AssumeRoleResponseDeserializer"]),
    ("STS: HTTP client (hyper client, connector, pool)",
     ["hyper::client", "hyper_util::client", "aws_smithy_http_client::",
      "h1::role::Client", "dispatch::Client"]),
    ("STS: SDK orchestrator (interceptors, config, retries, identity, endpoint)",
     ["aws_smithy_runtime", "aws_sdk_sts::", "aws_runtime::", "aws_smithy_types::",
      "aws_smithy_async::", "aws_smithy_observability", "StsClient"]),
    ("JWT verify (split, RSA, SHA-256, claims)",
     ["attestation_broker::verify", "attestation_broker::claims", "attestation_broker::jwks"]),
    ("policy and decision (rules, rego, session)",
     ["attestation_broker::policy", "attestation_broker::decision", "regorus::"]),
    ("replay", ["attestation_broker::replay"]),
    ("handler (request, answer, JSON)", ["attestation_broker::http::issue"]),
    ("HTTP server (hyper, axum, tower)",
     ["hyper::", "axum", "httparse::", "tower::", "tower_http::", "attestation_broker::http"]),
    ("tokio scheduler and I/O driver", ["tokio::", "mio::"]),
]
OTHER = "other (no purpose on the kept stack: interrupts, thread roots)"


def samples(path):
    """Yields each sample's frames, leaf first, as (symbol, is_kernel)."""
    frames = []
    with open(path, errors="replace") as lines:
        for line in lines:
            if not line.strip():
                if frames:
                    yield frames
                frames = []
            elif line.startswith("\t"):
                parts = line.strip().split(None, 1)
                rest = parts[1] if len(parts) > 1 else ""
                kernel = "kernel.kallsyms" in rest
                symbol = rest.rsplit(" (", 1)[0] if rest.endswith(")") else rest
                frames.append((symbol, kernel))
    if frames:
        yield frames


def purpose(frames):
    for name, needles in PURPOSES:
        if any(needle in symbol for symbol, _ in frames for needle in needles):
            return name
    return OTHER


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    us_per_issuance = float(sys.argv[2])
    user = collections.Counter()
    kernel = collections.Counter()
    total = 0
    for frames in samples(sys.argv[1]):
        total += 1
        name = purpose(frames)
        (kernel if frames[0][1] else user)[name] += 1
    if total == 0:
        sys.exit("no samples")
    names = [name for name, _ in PURPOSES] + [OTHER]
    width = max(len(name) for name in names)
    print(f"{total} samples; {us_per_issuance:.0f} µs of broker CPU per issuance\n")
    print(f"| {'part':<{width}} | user µs | kernel µs | total µs |     % |")
    print(f"|{'-' * (width + 2)}|--------:|----------:|---------:|------:|")
    for name in names:
        u, k = user[name], kernel[name]
        if u + k == 0:
            continue
        share = (u + k) / total
        print(f"| {name:<{width}} | {us_per_issuance * u / total:7.1f} "
              f"| {us_per_issuance * k / total:9.1f} | {us_per_issuance * share:8.1f} "
              f"| {100 * share:5.1f} |")
    u, k = sum(user.values()), sum(kernel.values())
    print(f"| {'total':<{width}} | {us_per_issuance * u / total:7.1f} "
          f"| {us_per_issuance * k / total:9.1f} | {us_per_issuance:8.1f} | 100.0 |")
    sts = [name for name in names if name.startswith("STS")]
    sts_share = sum(user[name] + kernel[name] for name in sts) / total
    print(f"\nSTS client, all rows: {us_per_issuance * sts_share:.1f} µs "
          f"({100 * sts_share:.1f} %) per issuance")


if __name__ == "__main__":
    main()
