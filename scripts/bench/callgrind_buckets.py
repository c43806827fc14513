#!/usr/bin/env python3
"""Per-issuance instruction counts by purpose, from two callgrind profiles.

    callgrind_buckets.py SMALL.out N_SMALL LARGE.out N_LARGE

SMALL.out and LARGE.out are callgrind outputs of the same broker run through
N_SMALL and N_LARGE issuances (scripts/profile.sh makes them). Start-up,
warm-up and shutdown cost the same in both, so (LARGE - SMALL) / (N_LARGE -
N_SMALL) is the cost of one issuance in steady state.

Attribution: every function's self cost goes to a purpose. Some functions
name their purpose (BUCKETS below: regular expressions on the demangled name,
first match wins); the others (std, allocator, shared crypto and HTTP/1 code,
tokio glue) inherit it from their callers, split in proportion to the
inclusive cost of each call edge. Along a chain of callers the bucket listed
FIRST wins: the SigV4 signer's SHA-256 stays with signing, serde_json called by
the audit line stays with the audit line, and everything called by the HTTP
handler that names no earlier purpose stays with HTTP. Callgrind keeps one
level of callers only, so a function shared by several purposes is split by
the weight of its direct callers: an approximation, good to a few percent.
What reaches no bucket is "other" (tokio's scheduler and I/O driver, thread
roots). The allocator (malloc/free/realloc, whoever called it) is also shown
on its own as a cross-cutting figure. Callgrind counts user-space instructions
only: kernel time (loopback TCP, epoll, the write(2) of each log line) is not
in these numbers; the CPU-time figure of scripts/bench.sh includes it.
"""
import re
import sys
import threading
from collections import defaultdict

# (bucket, pattern). Order matters: along a chain of callers the first wins.
BUCKETS = [
    ("audit line and logging (tracing JSON, stdout)", r"attestation_broker::audit::|tracing_subscriber::|tracing_core::|<tracing_subscriber|tracing::"),
    ("metrics (prometheus)", r"prometheus::|attestation_broker::metrics::"),
    ("JWT verify (jsonwebtoken, aws-lc RSA)", r"attestation_broker::verify::|attestation_broker::jwks::|jsonwebtoken::|aws_lc_rs::(rsa|ec|signature|digest)::"),
    ("policy (rules, rego)", r"attestation_broker::policy|attestation_broker::rego|regorus::"),
    ("replay (moka)", r"attestation_broker::replay|moka::"),
    ("STS: SigV4 signing", r"aws_sigv4::"),
    ("STS: (de)serialize (query body, XML answer)", r"aws_smithy_xml::|xmlparser::|aws_sdk_sts::protocol_serde|aws_smithy_query::"),
    ("STS: request (SDK orchestrator, hyper client)", r"aws_sdk_sts::|aws_smithy_|aws_config::|aws_runtime::|aws_credential_types::|attestation_broker::sts::|hyper_util::client|hyper::client::|hyper::proto::h1::role::Client|hyper_util::rt"),
    ("JSON (serde_json: body, answer)", r"serde_json::"),
    ("HTTP server (hyper, axum, tower)", r"hyper::server::|hyper::proto::h1::role::Server|axum::|tower::|tower_http::|axum_server::|attestation_broker::http::|attestation_broker::serve|attestation_broker::limits"),
]
OTHER = "other (tokio scheduler and I/O driver, thread roots)"
ALLOC = re.compile(r"^(mi_|_mi_|mimalloc|malloc|free|realloc|calloc|__rust_alloc|__rust_dealloc|__rust_realloc|__libc_malloc|__libc_free|_int_malloc|_int_free|alloc::alloc::|__rdl_|__rg_)")
COMPILED = [(name, re.compile(pattern)) for name, pattern in BUCKETS]


def bucket_of(name, cache={}):
    if name not in cache:
        cache[name] = next((b for b, rx in COMPILED if rx.search(name)), None)
    return cache[name]


def parse(path):
    """Self cost per function and inclusive cost per call edge (caller, callee)."""
    names = {}
    self_cost = defaultdict(int)
    edges = defaultdict(int)
    current = None
    callee = None
    pending_call = False
    total = None

    def resolve(text):
        text = text.strip()
        m = re.match(r"\((\d+)\)(?:\s+(.*))?$", text)
        if m:
            if m.group(2) is not None:
                names[m.group(1)] = m.group(2)
            return names.get(m.group(1), "???")
        return text

    with open(path, errors="replace") as handle:
        for line in handle:
            if not line or line[0] == "#":
                continue
            c = line[0]
            if c.isdigit() or c in "+-*":
                parts = line.split()
                cost = int(parts[1]) if len(parts) > 1 else 0
                if pending_call:
                    edges[(current, callee)] += cost
                    pending_call = False
                else:
                    self_cost[current] += cost
            elif line.startswith("fn="):
                current = resolve(line[3:])
            elif line.startswith("cfn="):
                callee = resolve(line[4:])
            elif line.startswith("calls="):
                pending_call = True
            elif line.startswith("summary:") or line.startswith("totals:"):
                total = int(line.split()[1])
    if total is None:
        total = sum(self_cost.values())
    return total, self_cost, edges


def buckets(path):
    total, self_cost, edges = parse(path)
    rank = {name: index for index, (name, _) in enumerate(BUCKETS)}
    rank[OTHER] = len(BUCKETS)
    callers = defaultdict(list)
    for (caller, callee), cost in edges.items():
        if caller != callee and cost > 0:
            callers[callee].append((caller, cost))
    memo = {}
    visiting = set()

    def enclose(outer, own):
        if own is None:
            return outer
        return outer if rank[outer] < rank[own] else own

    def distribution(name):
        if name in memo:
            return memo[name]
        if name in visiting:
            return {OTHER: 1.0}
        visiting.add(name)
        own = bucket_of(name)
        incoming = callers.get(name, [])
        weight = sum(cost for _, cost in incoming)
        if weight == 0:
            result = {own or OTHER: 1.0}
        else:
            result = defaultdict(float)
            for caller, cost in incoming:
                for outer, fraction in distribution(caller).items():
                    result[enclose(outer, own)] += fraction * cost / weight
        visiting.discard(name)
        memo[name] = result
        return result

    result = defaultdict(float)
    for name, cost in self_cost.items():
        if cost:
            for bucket, fraction in distribution(name).items():
                result[bucket] += cost * fraction
    alloc = sum(cost for name, cost in self_cost.items() if ALLOC.search(name))
    return total, result, alloc


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    small, n_small, large, n_large = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    count = n_large - n_small
    t1, b1, a1 = buckets(small)
    t2, b2, a2 = buckets(large)
    per = lambda x2, x1: (x2 - x1) / count
    total = per(t2, t1)
    print(f"instructions per issuance (Ir), from {n_large} - {n_small} issuances: {total:,.0f}")
    print()
    print(f"| {'part':<52} | {'Ir / issuance':>13} | {'%':>5} |")
    print(f"|{'-' * 54}|{'-' * 15}:|{'-' * 6}:|")
    claimed = 0.0
    for name, _ in BUCKETS:
        value = per(b2.get(name, 0), b1.get(name, 0))
        claimed += value
        print(f"| {name:<52} | {value:>13,.0f} | {100 * value / total:>5.1f} |")
    other = per(b2.get(OTHER, 0), b1.get(OTHER, 0))
    print(f"| {OTHER:<52} | {other:>13,.0f} | {100 * other / total:>5.1f} |")
    print(f"| {'total':<52} | {total:>13,.0f} | 100.0 |")
    alloc = per(a2, a1)
    print()
    print(f"of which in the allocator (self cost of malloc/free/realloc, any caller): {alloc:,.0f} Ir ({100 * alloc / total:.1f}%)")


if __name__ == "__main__":
    # Deep call graphs: recursion over callers needs a big stack.
    sys.setrecursionlimit(1_000_000)
    threading.stack_size(512 * 1024 * 1024)
    worker = threading.Thread(target=main)
    worker.start()
    worker.join()
