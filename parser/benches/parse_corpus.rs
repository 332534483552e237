//! Parser throughput over the whole real-world Dockerfile corpus in `../shared/conformance/real-world`
//! (raw nodes + typed instructions), reported by criterion as bytes per second, plus one plain
//! `MB/s` line measured over a fixed number of passes.

use std::path::PathBuf;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn corpus() -> Vec<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/real-world");
    let mut files = Vec::new();
    let Ok(owners) = std::fs::read_dir(&dir) else {
        eprintln!(
            "SKIPPED: {} is missing (../shared beside the repo root)",
            dir.display()
        );
        return files;
    };
    for owner in owners.flatten().filter(|e| e.path().is_dir()) {
        for f in std::fs::read_dir(owner.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(s) = std::fs::read_to_string(f.path()) {
                files.push(s);
            }
        }
    }
    files
}

fn parse_all(files: &[String]) -> usize {
    files
        .iter()
        .map(|f| rbuild_parser::instruction::parse(f).map_or(0, |d| d.stages.len()))
        .sum()
}

fn bench(c: &mut Criterion) {
    let files = corpus();
    if files.is_empty() {
        return;
    }
    let bytes: usize = files.iter().map(String::len).sum();
    // A plain figure first: MB/s over enough passes to take about a second.
    let passes = 400;
    let start = Instant::now();
    let mut stages = 0;
    for _ in 0..passes {
        stages += parse_all(std::hint::black_box(&files));
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "real-world corpus: {} files, {} bytes; {passes} passes in {secs:.3} s = {:.1} MB/s ({} stages seen)",
        files.len(),
        bytes,
        (bytes * passes) as f64 / secs / 1e6,
        stages / passes
    );

    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("real-world corpus", |b| {
        b.iter(|| parse_all(std::hint::black_box(&files)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
