//! What a plugin's Arrow IPC may hold, checked from its message headers before a byte of it is
//! decoded.
//!
//! Decoding runs in the host, outside the guest's time and memory limits, so a message whose
//! decoding costs more than its size says must be refused before it is decoded: a delta
//! dictionary (each one appends to every earlier one, so decoding a stream of them is quadratic)
//! is the plugin's error; a header that does not parse or a length past the stream's end are the
//! plugin's unreadable output.

/// Checks every message header of one IPC stream.
pub(super) fn check_stream(bytes: &[u8]) -> Result<(), String> {
    let word = |at: usize| -> Result<i32, String> {
        match bytes.get(at..at.saturating_add(4)) {
            Some(&[a, b, c, d]) => Ok(i32::from_le_bytes([a, b, c, d])),
            _ => Err(format!(
                "the stream ends inside a message header (at byte {at})"
            )),
        }
    };
    let mut at = 0usize;
    while at < bytes.len() {
        // A message: [0xFFFFFFFF] length, then the header's flatbuffer, then the body.
        let first = word(at)?;
        let (len, skip) = if first == -1 {
            (word(at + 4)?, 8)
        } else {
            (first, 4)
        };
        if len == 0 {
            return Ok(()); // end of stream
        }
        let len = usize::try_from(len)
            .map_err(|_| format!("a message header of negative length (at byte {at})"))?;
        let start = at + skip;
        let header = bytes
            .get(start..start.saturating_add(len))
            .ok_or_else(|| format!("a message header runs past the stream's end (at byte {at})"))?;
        let message = arrow_ipc::root_as_message(header)
            .map_err(|e| format!("a message header does not parse (at byte {at}): {e}"))?;
        if message
            .header_as_dictionary_batch()
            .is_some_and(|d| d.isDelta())
        {
            return Err(
                "the plugin returned a delta dictionary, which the lake does not take; send each dictionary whole"
                    .into(),
            );
        }
        let body = usize::try_from(message.bodyLength())
            .map_err(|_| format!("a message body of negative length (at byte {at})"))?;
        at = start
            .checked_add(len)
            .and_then(|a| a.checked_add(body))
            .ok_or_else(|| format!("a message body past any stream's end (at byte {at})"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{DictionaryArray, Int64Array, RecordBatch, types::Int32Type};
    use arrow_ipc::writer::{DictionaryHandling, IpcWriteOptions, StreamWriter};
    use arrow_schema::{DataType, Field, Schema};

    use super::*;

    type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

    fn stream(handling: DictionaryHandling) -> TestResult<Vec<u8>> {
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "k",
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                false,
            ),
            Field::new("n", DataType::Int64, false),
        ]));
        let options = IpcWriteOptions::default().with_dictionary_handling(handling);
        let mut out = Vec::new();
        let mut w = StreamWriter::try_new_with_options(&mut out, &schema, options)?;
        for words in [
            vec!["a", "b"],
            vec!["a", "b", "c"],
            vec!["a", "b", "c", "d"],
        ] {
            let n = words.len() as i64;
            let k: DictionaryArray<Int32Type> = words.into_iter().collect();
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(k), Arc::new(Int64Array::from_iter_values(0..n))],
            )?;
            w.write(&batch)?;
        }
        w.finish()?;
        drop(w);
        Ok(out)
    }

    #[test]
    fn delta_dictionaries_are_refused_whole_ones_pass() -> TestResult {
        assert_eq!(check_stream(&stream(DictionaryHandling::Resend)?), Ok(()));
        let refused = check_stream(&stream(DictionaryHandling::Delta)?);
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.contains("delta dictionary")),
            "{refused:?}"
        );
        Ok(())
    }

    #[test]
    fn broken_streams_are_refused_with_where() -> TestResult {
        let whole = stream(DictionaryHandling::Resend)?;
        let cut = check_stream(&whole[..whole.len() / 2]);
        // Cut inside a header or a body: a header cut is named; a body cut is left to the decoder.
        assert!(
            cut.is_ok() || cut.as_ref().is_err_and(|e| e.contains("at byte")),
            "{cut:?}"
        );
        assert!(check_stream(&[0xff, 0xff, 0xff, 0xff, 3, 0, 0, 0, 1, 2, 3]).is_err());
        assert!(check_stream(&[0xff, 0xff, 0xff, 0xff, 0xf0, 0xff, 0xff, 0xff]).is_err());
        assert!(check_stream(&[1, 2]).is_err());
        assert_eq!(check_stream(&[]), Ok(()));
        Ok(())
    }
}
