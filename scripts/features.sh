#!/usr/bin/env sh
# The features the tests, lints and docs build with: every feature of truflux except
# `tls-aws-lc` (the other TLS provider: the same code with aws-lc-rs instead of ring, and about
# 100 s more of C build on 2 cores). `cargo check --features tls-aws-lc` checks it.
echo "truflux/axum,truflux/prometheus,truflux/tls-webpki-roots,truflux/fuzzing"
