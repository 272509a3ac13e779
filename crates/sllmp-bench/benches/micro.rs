//! Micro-benchmarks of SLLMP's per-request and per-chunk work:
//!
//! - `request/parse_validate`: a ~2 KB chat request with tools parsed into a `ChatRequest`
//!   and checked by the validation middleware;
//! - `sse_reader/openai_transcript`: the SSE decoder over an OpenAI streaming transcript,
//!   fed in 1–4 KiB reads (throughput in bytes/s);
//! - `chunk_path/parse_assemble_serialize`: per chunk, what the proxy does between the SSE
//!   reader and the socket: parse the `data:` JSON into a `ChatChunk`, push it into the
//!   `StreamAssembler`, serialize it back into a `data: ...\n\n` frame.
//!
//! The `reference_*` functions are not SLLMP's code paths but yardsticks for them: the same
//! JSON parsed into a `serde_json::Value`, parsed without `serde_path_to_error`, and the cost
//! of one `ChatRequest::clone`.
//!
//! Runs are kept short (`cargo bench -p sllmp-bench --bench micro`); `cargo xtask bench`
//! runs them and copies the results into `docs/benchmarks.md`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sllmp::core::StreamAssembler;
use sllmp::providers::sse::{SseDecoder, SseEvent};
use sllmp::{ChatChunk, ChatRequest, Validation};
use sllmp_bench::fixtures::{READ_SIZES, chat_request_body, chunk_payloads, openai_transcript};

/// Content chunks of the transcripts.
const CHUNKS: usize = 50;

fn parse_validate(c: &mut Criterion) {
    let body = chat_request_body();
    let mut group = c.benchmark_group("request");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("parse_validate", |b| {
        b.iter(|| {
            let request = ChatRequest::from_slice(black_box(&body)).expect("the fixture parses");
            Validation::check(&request).expect("the fixture is valid");
            request
        });
    });
    // References, to tell where the time of `parse_validate` goes.
    group.bench_function("reference_parse_without_path", |b| {
        b.iter(|| serde_json::from_slice::<ChatRequest>(black_box(&body)).expect("parses"));
    });
    group.bench_function("reference_parse_json_value", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&body)).expect("parses"));
    });
    let request = ChatRequest::from_slice(&body).expect("the fixture parses");
    group.bench_function("reference_clone", |b| {
        b.iter(|| black_box(&request).clone());
    });
    group.finish();
}

fn sse_reader(c: &mut Criterion) {
    let transcript = openai_transcript(CHUNKS);
    let mut reads = Vec::new();
    let mut rest = &transcript[..];
    for size in READ_SIZES.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (read, tail) = rest.split_at((*size).min(rest.len()));
        reads.push(read);
        rest = tail;
    }
    let mut group = c.benchmark_group("sse_reader");
    group.throughput(Throughput::Bytes(transcript.len() as u64));
    group.bench_function("openai_transcript", |b| {
        let mut events: Vec<SseEvent> = Vec::with_capacity(64);
        b.iter(|| {
            let mut decoder = SseDecoder::default();
            let mut count = 0;
            for read in &reads {
                decoder.feed(black_box(read), &mut events);
                count += events.len();
                events.clear();
            }
            count + usize::from(decoder.finish().is_some())
        });
    });
    group.finish();
}

fn chunk_path(c: &mut Criterion) {
    let payloads = chunk_payloads(&openai_transcript(CHUNKS));
    let mut group = c.benchmark_group("chunk_path");
    group.throughput(Throughput::Elements(payloads.len() as u64));
    group.bench_function("parse_assemble_serialize", |b| {
        b.iter(|| {
            let mut assembler = StreamAssembler::default();
            let mut written = 0;
            for payload in &payloads {
                let chunk = ChatChunk::from_json(black_box(payload)).expect("the fixture parses");
                assembler.push(&chunk);
                let mut frame = Vec::with_capacity(256);
                frame.extend_from_slice(b"data: ");
                serde_json::to_writer(&mut frame, &chunk).expect("a chunk serializes");
                frame.extend_from_slice(b"\n\n");
                written += black_box(frame).len();
            }
            (written, assembler.finish())
        });
    });
    group.bench_function("reference_parse_json_value", |b| {
        b.iter(|| {
            let mut fields = 0;
            for payload in &payloads {
                let value: serde_json::Value =
                    serde_json::from_str(black_box(payload)).expect("parses");
                fields += value.as_object().map_or(0, |o| o.len());
            }
            fields
        });
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
}

criterion_group! {
    name = micro;
    config = config();
    targets = parse_validate, sse_reader, chunk_path
}
criterion_main!(micro);
