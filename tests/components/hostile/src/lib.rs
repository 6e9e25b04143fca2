//! A parser that misbehaves on its first chunk, in the way its cargo feature selects: spin forever,
//! allocate without bound, panic, read a host file, open a socket, sleep, flood the log or the
//! progress calls, answer bytes that are no Arrow IPC, or change its table's schema mid-stream. The
//! sandbox must stop each one with its own clear error and keep the host serving. Other features
//! make it lie about itself in `describe` (its kind, its interface version, a name that is empty,
//! 10 KiB long, holds control characters or is a bundled plugin's), or build it against another
//! version of the interface: the host must refuse each at load with the reason.

use lake_sdk::{Info, Params, Parser, PluginError, RecordBatch, Result, SchemaRef};

pub struct Hostile;

impl Parser for Hostile {
    fn info() -> Info {
        describing();
        Info {
            name: NAME,
            version: "0.0.1",
            description: description(),
            capabilities: &[],
        }
    }

    fn start(params: Params) -> Result<Self> {
        starting(&params)?;
        Ok(Hostile)
    }

    fn push(&mut self, chunk: &[u8]) -> Result<Vec<RecordBatch>> {
        misbehave(chunk)?;
        output()
    }

    fn finish(&mut self) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        Ok((schema(), Vec::new()))
    }
}

/// What `start` does besides answering: nothing, except for the progress flood.
#[cfg(not(feature = "progressflood"))]
fn starting(_params: &Params) -> Result<()> {
    Ok(())
}

/// What `describe` does besides answering: nothing, except for the two features that make it
/// misbehave.
#[cfg(not(any(feature = "loud", feature = "describepanic")))]
fn describing() {}

#[cfg(feature = "loud")]
const NAME: &str = "hostile-loud";
/// Writes to stderr and sleeps while describing itself.
#[cfg(feature = "loud")]
fn describing() {
    eprintln!("hostile-loud is describing itself, slowly");
    std::thread::sleep(std::time::Duration::from_millis(200));
}
#[cfg(feature = "loud")]
fn misbehave(_chunk: &[u8]) -> Result<()> {
    Ok(())
}

#[cfg(feature = "describepanic")]
const NAME: &str = "hostile-describepanic";
#[cfg(feature = "describepanic")]
fn describing() {
    panic!("hostile-describepanic refuses to describe itself");
}
#[cfg(feature = "describepanic")]
fn misbehave(_chunk: &[u8]) -> Result<()> {
    Ok(())
}

#[cfg(not(feature = "bigdesc"))]
fn description() -> &'static str {
    "misbehaves on purpose (tests only)"
}

#[cfg(feature = "bigdesc")]
const NAME: &str = "hostile-bigdesc";
/// A description of 1 MiB, which every `GET /plugins` would carry.
#[cfg(feature = "bigdesc")]
fn description() -> &'static str {
    Box::leak("x".repeat(1 << 20).into_boxed_str())
}
#[cfg(feature = "bigdesc")]
fn misbehave(_chunk: &[u8]) -> Result<()> {
    Ok(())
}

#[cfg(feature = "badname")]
const NAME: &str = "../../etc\u{202e}txt";
#[cfg(feature = "badname")]
fn misbehave(_chunk: &[u8]) -> Result<()> {
    Ok(())
}

#[cfg(feature = "logflood")]
const NAME: &str = "hostile-logflood";
#[cfg(feature = "logflood")]
fn misbehave(_chunk: &[u8]) -> Result<()> {
    // Far more lines than an invocation may log, each trying to forge a line of the host's own.
    for i in 0..100_000 {
        lake_sdk::log(
            lake_sdk::Level::Error,
            &format!("line {i}\n2026-12-04T00:00:00Z ERROR lake_host: forged"),
        );
    }
    Err(PluginError::Internal("logged 100000 lines".into()))
}

#[cfg(feature = "spin")]
const NAME: &str = "hostile-spin";
#[cfg(feature = "spin")]
fn misbehave(chunk: &[u8]) -> Result<()> {
    // A loop the optimiser cannot remove.
    let mut x = chunk.len() as u64;
    loop {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}

#[cfg(feature = "membomb")]
const NAME: &str = "hostile-membomb";
#[cfg(feature = "membomb")]
fn misbehave(_chunk: &[u8]) -> Result<()> {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![7u8; 16 << 20]);
        std::hint::black_box(&hoard);
    }
}

#[cfg(feature = "panic")]
const NAME: &str = "hostile-panic";
#[cfg(feature = "panic")]
fn misbehave(chunk: &[u8]) -> Result<()> {
    panic!("hostile plugin gave up on a chunk of {} bytes", chunk.len());
}

#[cfg(feature = "readfile")]
const NAME: &str = "hostile-readfile";
#[cfg(feature = "readfile")]
fn misbehave(_chunk: &[u8]) -> Result<()> {
    match std::fs::read("/etc/passwd") {
        Ok(bytes) => Err(PluginError::Internal(format!(
            "read {} bytes of the host's /etc/passwd",
            bytes.len()
        ))),
        Err(e) => Err(PluginError::Internal(format!(
            "reading /etc/passwd failed: {e}"
        ))),
    }
}

#[cfg(feature = "sleep")]
const NAME: &str = "hostile-sleep";
/// Sleeps for 45 s in a host call, where no guest code runs for the epoch to interrupt.
#[cfg(feature = "sleep")]
fn misbehave(_chunk: &[u8]) -> Result<()> {
    std::thread::sleep(std::time::Duration::from_secs(45));
    Err(PluginError::Internal("slept 45 s".into()))
}

#[cfg(feature = "socket")]
const NAME: &str = "hostile-socket";
#[cfg(feature = "socket")]
fn misbehave(_chunk: &[u8]) -> Result<()> {
    match std::net::TcpStream::connect("127.0.0.1:5432") {
        Ok(_) => Err(PluginError::Internal("connected to 127.0.0.1:5432".into())),
        Err(e) => Err(PluginError::Internal(format!(
            "connecting to 127.0.0.1:5432 failed: {e}"
        ))),
    }
}

/// What `push` returns: nothing, except for the features that flood the host with output.
#[cfg(not(any(feature = "outflood", feature = "zerocols", feature = "schemaflip")))]
fn output() -> Result<Vec<RecordBatch>> {
    Ok(Vec::new())
}
#[cfg(not(any(feature = "outflood", feature = "schemaflip")))]
fn schema() -> SchemaRef {
    lake_sdk::table::empty_schema()
}

#[cfg(feature = "outflood")]
const NAME: &str = "hostile-outflood";
#[cfg(feature = "outflood")]
fn misbehave(_chunk: &[u8]) -> Result<()> {
    Ok(())
}
/// 200 batches of 10,000 rows (16 MB of Arrow IPC) for one small chunk of input.
#[cfg(feature = "outflood")]
fn output() -> Result<Vec<RecordBatch>> {
    let n = lake_sdk::arrow_array::Int64Array::from_iter_values(0..10_000);
    (0..200)
        .map(|_| lake_sdk::batch!("n" => n.clone()))
        .collect()
}
#[cfg(feature = "outflood")]
fn schema() -> SchemaRef {
    std::sync::Arc::new(lake_sdk::Schema::new(vec![lake_sdk::Field::new(
        "n",
        lake_sdk::DataType::Int64,
        false,
    )]))
}

#[cfg(feature = "zerocols")]
const NAME: &str = "hostile-zerocols";
#[cfg(feature = "zerocols")]
fn misbehave(_chunk: &[u8]) -> Result<()> {
    Ok(())
}
/// A batch of 2^32 - 1 rows (the most a 32-bit guest can say) and no column: a few bytes of IPC
/// that would be hours of Parquet writing.
#[cfg(feature = "zerocols")]
fn output() -> Result<Vec<RecordBatch>> {
    let options = lake_sdk::arrow_array::RecordBatchOptions::new().with_row_count(Some(usize::MAX));
    let b =
        RecordBatch::try_new_with_options(schema(), vec![], &options).map_err(PluginError::from)?;
    Ok(vec![b])
}

#[cfg(feature = "schemaflip")]
const NAME: &str = "hostile-schemaflip";
#[cfg(feature = "schemaflip")]
fn misbehave(_chunk: &[u8]) -> Result<()> {
    Ok(())
}
/// A batch of one integer column `n`, then one of one text column `s`: a table whose schema changes
/// mid-stream.
#[cfg(feature = "schemaflip")]
fn output() -> Result<Vec<RecordBatch>> {
    let n = lake_sdk::arrow_array::Int64Array::from_iter_values(0..3);
    let s = lake_sdk::arrow_array::StringArray::from_iter_values(["a", "b", "c"]);
    Ok(vec![
        lake_sdk::batch!("n" => n)?,
        lake_sdk::batch!("s" => s)?,
    ])
}
#[cfg(feature = "schemaflip")]
fn schema() -> SchemaRef {
    std::sync::Arc::new(lake_sdk::Schema::new(vec![lake_sdk::Field::new(
        "n",
        lake_sdk::DataType::Int64,
        true,
    )]))
}

#[cfg(feature = "progressflood")]
const NAME: &str = "hostile-progressflood";
/// Reports progress `calls` times (a parameter: a number, or `forever`), with the largest values
/// the interface carries: `done` past `total`, a `total` of zero, no `total` at all; then reports
/// `calls` of `calls` and parses nothing.
#[cfg(feature = "progressflood")]
fn starting(params: &Params) -> Result<()> {
    let calls = params
        .pairs()
        .iter()
        .find(|(k, _)| k == "calls")
        .map_or("forever", |(_, v)| v.as_str());
    if calls == "forever" {
        let mut i = 0u64;
        loop {
            lake_sdk::progress(u64::MAX - i, Some(i));
            i = i.wrapping_add(1);
        }
    }
    let n: u64 = calls
        .parse()
        .map_err(|_| PluginError::InvalidParams(format!("calls: {calls:?} is not a number")))?;
    for i in 0..n {
        let total = if i % 2 == 0 { Some(0) } else { None };
        lake_sdk::progress(u64::MAX - i, total);
    }
    lake_sdk::progress(n, Some(n));
    Ok(())
}

#[cfg(feature = "shadow")]
const NAME: &str = "csv";
#[cfg(feature = "emptyname")]
const NAME: &str = "";
/// 10 KiB of `a`.
#[cfg(feature = "longname")]
const NAME: &str = {
    const LONG: [u8; 10 << 10] = [b'a'; 10 << 10];
    match std::str::from_utf8(&LONG) {
        Ok(s) => s,
        Err(_) => panic!("ASCII is UTF-8"),
    }
};
#[cfg(feature = "ctrlname")]
const NAME: &str = "hostile\u{7}ctrl\nname";
#[cfg(feature = "kindlie")]
const NAME: &str = "hostile-kindlie";
#[cfg(feature = "witlie")]
const NAME: &str = "hostile-witlie";
#[cfg(feature = "otherwit")]
const NAME: &str = "hostile-otherwit";
/// Only what it says of itself is wrong: it never gets to run.
#[cfg(any(
    feature = "progressflood",
    feature = "shadow",
    feature = "emptyname",
    feature = "longname",
    feature = "ctrlname",
    feature = "kindlie",
    feature = "witlie",
    feature = "otherwit"
))]
fn misbehave(_chunk: &[u8]) -> Result<()> {
    Ok(())
}

#[cfg(feature = "badipc")]
const NAME: &str = "hostile-badipc";
#[cfg(feature = "badipc")]
fn misbehave(_chunk: &[u8]) -> Result<()> {
    Ok(())
}

/// Under `badipc`, `kindlie`, `witlie` and `emptyname` the component is exported by hand, below
/// the SDK (which only ever encodes valid Arrow IPC and describes its plugin truly): under
/// `badipc`, `push` answers bytes that are no IPC stream at all (a continuation marker and a
/// length, then text);
/// under `kindlie`, `describe` says it is a connector while it exports the parser world; under
/// `witlie`, `describe` says it was built against `lake:plugin@0.2.0` while it exports 0.1.0;
/// under `emptyname`, `describe` gives an empty name (the SDK's export would put the package's
/// name in its place).
#[cfg(all(
    any(
        feature = "badipc",
        feature = "kindlie",
        feature = "witlie",
        feature = "emptyname"
    ),
    target_arch = "wasm32"
))]
mod raw {
    use lake_sdk::glue::parser::bindings::exports::lake::plugin::parser::{
        Guest, GuestParse, Parse,
    };
    use lake_sdk::glue::parser::bindings::exports::lake::plugin::plugin::Guest as Describe;
    use lake_sdk::glue::parser::bindings::lake::plugin::types as t;

    struct Export;
    struct Garbage;

    /// The kind `describe` says.
    #[cfg(not(feature = "kindlie"))]
    const KIND: t::Kind = t::Kind::Parser;
    #[cfg(feature = "kindlie")]
    const KIND: t::Kind = t::Kind::Connector;
    /// The interface version `describe` says.
    #[cfg(not(feature = "witlie"))]
    const WIT_VERSION: &str = lake_sdk::WIT_VERSION;
    #[cfg(feature = "witlie")]
    const WIT_VERSION: &str = "0.2.0";

    impl Describe for Export {
        fn describe() -> t::Info {
            let mut info =
                lake_sdk::glue::parser::info(<crate::Hostile as lake_sdk::Parser>::info(), KIND);
            WIT_VERSION.clone_into(&mut info.wit_version);
            info
        }
    }
    impl Guest for Export {
        type Parse = Garbage;
    }
    impl GuestParse for Garbage {
        fn start(_params: Vec<(String, String)>) -> Result<Parse, t::PluginError> {
            Ok(Parse::new(Garbage))
        }
        fn push(&self, _chunk: Vec<u8>) -> Result<Vec<Vec<u8>>, t::PluginError> {
            let mut bytes = vec![0xff, 0xff, 0xff, 0xff, 0x40, 0x00, 0x00, 0x00];
            bytes.extend_from_slice(b"this is not an Arrow IPC message, only text past a length");
            Ok(vec![bytes])
        }
        fn finish(&self) -> Result<Vec<Vec<u8>>, t::PluginError> {
            Ok(Vec::new())
        }
    }
    lake_sdk::glue::parser::bindings::__export_parser_world!(
        Export with_types_in lake_sdk::glue::parser::bindings
    );
}

/// Under `otherwit` the component is built against `lake:plugin@0.2.0` (`wit/plugin.wit`, the
/// parser world of a later release), which this lake does not speak; it describes itself truly.
#[cfg(all(feature = "otherwit", target_arch = "wasm32"))]
mod other {
    lake_sdk::glue::__wit_bindgen::generate!({
        world: "parser-plugin",
        path: "wit/plugin.wit",
        runtime_path: "lake_sdk::glue::__wit_bindgen::rt",
    });

    use exports::lake::plugin::parser::{Guest, GuestParse, Parse};
    use exports::lake::plugin::plugin::Guest as Describe;
    use lake::plugin::types as t;

    struct Export;
    struct Nothing;

    impl Describe for Export {
        fn describe() -> t::Info {
            t::Info {
                name: crate::NAME.to_owned(),
                version: "0.0.1".to_owned(),
                wit_version: "0.2.0".to_owned(),
                kind: t::Kind::Parser,
                description: "built against lake:plugin@0.2.0 (tests only)".to_owned(),
                capabilities: Vec::new(),
            }
        }
    }
    impl Guest for Export {
        type Parse = Nothing;
    }
    impl GuestParse for Nothing {
        fn start(_params: Vec<(String, String)>) -> Result<Parse, t::PluginError> {
            Ok(Parse::new(Nothing))
        }
        fn push(&self, _chunk: Vec<u8>) -> Result<Vec<Vec<u8>>, t::PluginError> {
            Ok(Vec::new())
        }
        fn finish(&self) -> Result<Vec<Vec<u8>>, t::PluginError> {
            Ok(Vec::new())
        }
    }
    export!(Export);
}

#[allow(unused_imports)]
use PluginError as _;

#[cfg(not(any(
    feature = "badipc",
    feature = "kindlie",
    feature = "witlie",
    feature = "emptyname",
    feature = "otherwit"
)))]
lake_sdk::export_parser!(crate::Hostile);
