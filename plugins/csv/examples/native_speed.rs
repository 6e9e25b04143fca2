//! Times the CSV plugin's own logic natively (no sandbox): `cargo run --release --example
//! native_speed --manifest-path plugins/Cargo.toml -p plugin-csv -- FILE`.
use std::time::Instant;

use lake_sdk::{Params, Parser};
use plugin_csv::Csv;

fn main() {
    let path = std::env::args().nth(1).expect("a CSV file");
    let bytes = std::fs::read(path).expect("read");
    for _ in 0..3 {
        let t = Instant::now();
        let (schema, _) = arrow_csv::reader::Format::default()
            .with_header(true)
            .infer_schema(std::io::Cursor::new(&bytes), Some(1000))
            .expect("infer");
        let reader = arrow_csv::ReaderBuilder::new(std::sync::Arc::new(schema))
            .with_header(true)
            .with_batch_size(64 * 1024)
            .build(std::io::Cursor::new(&bytes))
            .expect("reader");
        let n: usize = reader.map(|b| b.expect("batch").num_rows()).sum();
        println!("native reader {n} rows {:.3}s", t.elapsed().as_secs_f64());
        let t = Instant::now();
        let mut p = Csv::start(Params::from_json(&serde_json::json!({}))).expect("start");
        let mut batches = Vec::new();
        for c in bytes.chunks(1 << 20) {
            batches.extend(p.push(c).expect("push"));
        }
        let (schema, rest) = p.finish().expect("finish");
        batches.extend(rest);
        let parsed = t.elapsed();
        let mut ipc = 0;
        for b in &batches {
            ipc += lake_sdk::table::to_ipc(&schema, std::slice::from_ref(b))
                .expect("ipc")
                .len();
        }
        println!(
            "parse {:.3}s, +ipc {:.3}s ({} MB out), {:.0} MB/s",
            parsed.as_secs_f64(),
            t.elapsed().as_secs_f64(),
            ipc / 1_000_000,
            bytes.len() as f64 / 1e6 / t.elapsed().as_secs_f64()
        );
    }
}
