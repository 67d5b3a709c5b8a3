//! The CSV parser of an export: `csv-core` over downloaded chunks, columns found by header name,
//! each record turned into an [`Event`] or a [`ReadError`] naming its row and column.

use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use serde::de::IntoDeserializer;

use super::{DEFAULT_MAX_ROW_BYTES, EventStream, MAX_ROW_FIELDS, Phase, ReadError, ReadProgress};
use crate::event::{Action, Actor, Context, Event, Metadata, Target, rfc3339_millis};

/// Parses an export's CSV from any stream of byte chunks (a file, a download) into events, with
/// the rules of the [module documentation](super). Memory stays bounded by one chunk, one row and
/// the events of one chunk.
pub fn parse_csv<S, E>(chunks: S) -> EventStream
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Into<ReadError> + 'static,
{
    let progress = ReadProgress::default();
    progress.set_phase(Phase::Downloading);
    EventStream {
        inner: Box::pin(parse(chunks, progress.clone(), DEFAULT_MAX_ROW_BYTES)),
        progress,
    }
}

pub(super) fn parse<S, E>(
    chunks: S,
    progress: ReadProgress,
    max_row_bytes: usize,
) -> impl Stream<Item = Result<Event, ReadError>> + Send + 'static
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Into<ReadError> + 'static,
{
    struct State<S> {
        chunks: Pin<Box<S>>,
        parser: CsvParser,
        queue: VecDeque<Result<Event, ReadError>>,
        done: bool,
        progress: ReadProgress,
    }
    let state = State {
        chunks: Box::pin(chunks),
        parser: CsvParser::new(max_row_bytes),
        queue: VecDeque::new(),
        done: false,
        progress,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(item) = st.queue.pop_front() {
                return Some((item, st));
            }
            if st.done {
                st.progress.set_phase(Phase::Done);
                return None;
            }
            match st.chunks.next().await {
                Some(Ok(chunk)) => {
                    st.progress
                        .inner
                        .bytes
                        .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    st.parser.feed(&chunk, &mut st.queue, &st.progress);
                }
                Some(Err(e)) => {
                    st.done = true;
                    st.queue.push_back(Err(e.into()));
                }
                None => {
                    st.parser.finish(&mut st.queue, &st.progress);
                    st.done = true;
                }
            }
            if st.parser.stopped {
                st.done = true;
            }
        }
    })
}

/// Column positions, found by header name.
#[derive(Debug)]
struct Columns {
    names: Vec<String>,
    action: usize,
    occurred_at: usize,
    actor_id: usize,
    actor_type: usize,
    actor_name: Option<usize>,
    actor_metadata: Option<usize>,
    location: usize,
    user_agent: Option<usize>,
    metadata: Option<usize>,
    /// Per target number, ascending: id, type, name, metadata.
    targets: Vec<[Option<usize>; 4]>,
}

impl Columns {
    fn from_header(names: Vec<String>) -> Result<Self, ReadError> {
        let find = |name: &str| names.iter().position(|n| n == name);
        let required = |name: &str| {
            find(name).ok_or_else(|| ReadError::Header {
                message: format!("no column named {name:?} (columns: {})", names.join(", ")),
            })
        };
        let mut targets: BTreeMap<u64, [Option<usize>; 4]> = BTreeMap::new();
        for (i, name) in names.iter().enumerate() {
            for (slot, prefix) in ["target_id_", "target_type_", "target_name_", "target_metadata_"]
                .iter()
                .enumerate()
            {
                if let Some(n) = name.strip_prefix(prefix).and_then(|n| n.parse::<u64>().ok()) {
                    targets.entry(n).or_default()[slot] = Some(i);
                }
            }
        }
        Ok(Self {
            action: required("action")?,
            occurred_at: required("occurred_at")?,
            actor_id: required("actor_id")?,
            actor_type: required("actor_type")?,
            location: required("context_location")?,
            actor_name: find("actor_name"),
            actor_metadata: find("actor_metadata"),
            user_agent: find("context_user_agent"),
            metadata: find("metadata"),
            targets: targets.into_values().collect(),
            names,
        })
    }
}

/// An incremental CSV record parser over chunks (`csv-core`), turning records into events.
struct CsvParser {
    core: csv_core::Reader,
    out: Vec<u8>,
    ends: Vec<usize>,
    out_len: usize,
    ends_len: usize,
    columns: Option<Columns>,
    /// Data rows seen (the header is not counted).
    row: u64,
    /// The line where the current record started.
    record_line: u64,
    max_row_bytes: usize,
    /// A fatal error was emitted; nothing more is parsed.
    stopped: bool,
}

impl CsvParser {
    fn new(max_row_bytes: usize) -> Self {
        Self {
            core: csv_core::Reader::new(),
            // Both buffers count toward the row's bytes (see `row_bytes`).
            out: vec![0; 4096.min(max_row_bytes / 2)],
            ends: vec![0; 64],
            out_len: 0,
            ends_len: 0,
            columns: None,
            row: 0,
            record_line: 1,
            max_row_bytes,
            stopped: false,
        }
    }

    fn feed(&mut self, mut input: &[u8], sink: &mut VecDeque<Result<Event, ReadError>>, p: &ReadProgress) {
        while !self.stopped {
            let (res, nin, nout, nend) = self.core.read_record(
                input,
                &mut self.out[self.out_len..],
                &mut self.ends[self.ends_len..],
            );
            input = &input[nin..];
            self.out_len += nout;
            self.ends_len += nend;
            match res {
                csv_core::ReadRecordResult::InputEmpty => return,
                csv_core::ReadRecordResult::OutputFull => {
                    let room = self.max_row_bytes.saturating_sub(self.row_bytes());
                    if room == 0 {
                        let message = format!("the row is larger than {} bytes", self.max_row_bytes);
                        return self.too_large(sink, message);
                    }
                    let new_len = self.out.len() + self.out.len().clamp(1, room);
                    self.out.resize(new_len, 0);
                }
                csv_core::ReadRecordResult::OutputEndsFull => {
                    if self.ends.len() >= MAX_ROW_FIELDS {
                        let message = format!("the row has more than {MAX_ROW_FIELDS} cells");
                        return self.too_large(sink, message);
                    }
                    let room = self.max_row_bytes.saturating_sub(self.row_bytes()) / size_of::<usize>();
                    let grow = self.ends.len().min(MAX_ROW_FIELDS - self.ends.len()).min(room);
                    if grow == 0 {
                        let message = format!("the row is larger than {} bytes", self.max_row_bytes);
                        return self.too_large(sink, message);
                    }
                    let new_len = self.ends.len() + grow;
                    self.ends.resize(new_len, 0);
                }
                csv_core::ReadRecordResult::Record => {
                    self.record(sink, p);
                    self.out_len = 0;
                    self.ends_len = 0;
                    self.record_line = self.core.line();
                }
                csv_core::ReadRecordResult::End => return,
            }
        }
    }

    /// The bytes the current row holds: its cells' buffer and the list of where they end.
    fn row_bytes(&self) -> usize {
        self.out.len() + self.ends.len() * size_of::<usize>()
    }

    /// Ends the stream: a row too large to read (the parser cannot find the next row safely).
    fn too_large(&mut self, sink: &mut VecDeque<Result<Event, ReadError>>, message: String) {
        self.stopped = true;
        sink.push_back(Err(ReadError::Row {
            row: self.row + 1,
            line: self.record_line,
            column: self.current_column(),
            message,
        }));
    }

    fn finish(&mut self, sink: &mut VecDeque<Result<Event, ReadError>>, p: &ReadProgress) {
        self.feed(&[], sink, p);
        if self.columns.is_none() && !self.stopped {
            self.stopped = true;
            sink.push_back(Err(ReadError::Header {
                message: "the file is empty (no header row)".into(),
            }));
        }
    }

    fn current_column(&self) -> String {
        let i = self.ends_len;
        self.columns
            .as_ref()
            .and_then(|c| c.names.get(i).cloned())
            .unwrap_or_else(|| format!("#{}", i + 1))
    }

    fn fields(&self) -> Vec<&[u8]> {
        let mut start = 0;
        self.ends[..self.ends_len]
            .iter()
            .map(|&end| {
                let f = &self.out[start..end];
                start = end;
                f
            })
            .collect()
    }

    fn record(&mut self, sink: &mut VecDeque<Result<Event, ReadError>>, p: &ReadProgress) {
        // A blank line is one empty field: skip it.
        if self.ends_len == 1 && self.ends[0] == 0 {
            return;
        }
        let Some(columns) = &self.columns else {
            let names: Result<Vec<String>, _> = self
                .fields()
                .into_iter()
                .enumerate()
                .map(|(i, f)| {
                    let name = std::str::from_utf8(f).map_err(|_| ReadError::Header {
                        message: format!("column {} is not UTF-8", i + 1),
                    })?;
                    let name = if i == 0 {
                        name.trim_start_matches('\u{feff}')
                    } else {
                        name
                    };
                    Ok(name.trim().to_owned())
                })
                .collect();
            match names.and_then(Columns::from_header) {
                Ok(c) => self.columns = Some(c),
                Err(e) => {
                    self.stopped = true;
                    sink.push_back(Err(e));
                }
            }
            return;
        };
        self.row += 1;
        p.inner.rows.fetch_add(1, Ordering::Relaxed);
        let row = RowView {
            fields: self.fields(),
            columns,
            row: self.row,
            line: self.record_line,
        };
        sink.push_back(row.event());
    }
}

/// One data row with its header, for building an event.
struct RowView<'a> {
    fields: Vec<&'a [u8]>,
    columns: &'a Columns,
    row: u64,
    line: u64,
}

impl RowView<'_> {
    fn error(&self, column: usize, message: impl Into<String>) -> ReadError {
        ReadError::Row {
            row: self.row,
            line: self.line,
            column: self
                .columns
                .names
                .get(column)
                .cloned()
                .unwrap_or_else(|| format!("#{}", column + 1)),
            message: message.into(),
        }
    }

    /// The cell at `i` as text; `None` when empty.
    fn text(&self, i: usize) -> Result<Option<&str>, ReadError> {
        let raw = self.fields.get(i).copied().unwrap_or_default();
        if raw.is_empty() {
            return Ok(None);
        }
        std::str::from_utf8(raw)
            .map(Some)
            .map_err(|_| self.error(i, "not valid UTF-8"))
    }

    fn optional(&self, i: Option<usize>) -> Result<Option<String>, ReadError> {
        match i {
            Some(i) => Ok(self.text(i)?.map(str::to_owned)),
            None => Ok(None),
        }
    }

    fn required(&self, i: usize) -> Result<String, ReadError> {
        self.text(i)?
            .map(str::to_owned)
            .ok_or_else(|| self.error(i, "must not be empty"))
    }

    fn metadata(&self, i: Option<usize>) -> Result<Option<Metadata>, ReadError> {
        let Some(i) = i else { return Ok(None) };
        let Some(text) = self.text(i)? else {
            return Ok(None);
        };
        let metadata: Metadata = serde_json::from_str(text).map_err(|e| {
            self.error(
                i,
                format!("not a JSON object of strings, numbers and booleans: {e}"),
            )
        })?;
        Ok((!metadata.is_empty()).then_some(metadata))
    }

    fn event(&self) -> Result<Event, ReadError> {
        let c = self.columns;
        if self.fields.len() != c.names.len() {
            let column = self.fields.len().min(c.names.len().saturating_sub(1));
            return Err(self.error(
                column,
                format!(
                    "the row has {} cells but the header has {} columns",
                    self.fields.len(),
                    c.names.len()
                ),
            ));
        }
        let action = self.required(c.action)?;
        let action = Action::deserialize(action.as_str().into_deserializer())
            .map_err(|e: serde::de::value::Error| self.error(c.action, e.to_string()))?;
        let occurred_at = self.required(c.occurred_at)?;
        let occurred_at = rfc3339_millis::parse(&occurred_at)
            .map_err(|e| self.error(c.occurred_at, format!("{occurred_at:?} is not RFC 3339: {e}")))?;
        let actor = Actor {
            id: self.required(c.actor_id)?,
            kind: self.required(c.actor_type)?.into(),
            name: self.optional(c.actor_name)?,
            metadata: self.metadata(c.actor_metadata)?,
        };
        let mut targets = Vec::new();
        for [id, kind, name, metadata] in &c.targets {
            let id_text = self.optional(*id)?;
            let kind_text = self.optional(*kind)?;
            let name = self.optional(*name)?;
            let metadata = self.metadata(*metadata)?;
            match (id_text, kind_text) {
                (None, None) if name.is_none() && metadata.is_none() => {}
                (Some(id), Some(kind)) => targets.push(Target {
                    id,
                    kind: kind.into(),
                    name,
                    metadata,
                }),
                (None, _) => {
                    return Err(match id {
                        Some(i) => self.error(*i, "must not be empty when the target has other cells"),
                        None => self.error(kind.unwrap_or(0), "a target without an id column"),
                    });
                }
                (Some(_), None) => {
                    return Err(match kind {
                        Some(i) => self.error(*i, "must not be empty when the target has an id"),
                        None => self.error(id.unwrap_or(0), "a target without a type column"),
                    });
                }
            }
        }
        let context = Context {
            location: self.required(c.location)?,
            user_agent: self.optional(c.user_agent)?,
        };
        Ok(Event {
            action,
            occurred_at,
            version: None,
            actor,
            targets,
            context,
            metadata: self.metadata(c.metadata)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::TryStreamExt;

    fn chunks(text: &str, size: usize) -> impl Stream<Item = Result<Bytes, ReadError>> + Send + 'static {
        let parts: Vec<Result<Bytes, ReadError>> = text
            .as_bytes()
            .chunks(size.max(1))
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        futures_util::stream::iter(parts)
    }

    async fn all(text: &str, size: usize) -> Vec<Result<Event, ReadError>> {
        parse_csv(chunks(text, size)).collect().await
    }

    const CSV: &str = "\u{feff}extra,metadata,target_type_2,occurred_at,action,actor_id,actor_type,context_location,target_id_2,target_id_1,target_type_1\r\n\
        x,\"{\"\"n\"\":1.5,\"\"s\"\":\"\"a,b\"\"}\",team,2024-01-02T03:04:05.678Z,user.signed_in,user_1,user,203.0.113.7,t2,t1,invoice\r\n\
        \n\
        y,,,2024-01-02T03:04:06.000Z,user.signed_out,user_2,user,\"multi\nline\",,,\r\n";

    #[tokio::test]
    async fn columns_by_name_any_chunking() {
        for size in [1, 2, 7, 64, 4096] {
            let events: Vec<Event> = all(CSV, size)
                .await
                .into_iter()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(events.len(), 2, "chunk size {size}");
            assert_eq!(events[0].action.as_str(), "user.signed_in");
            assert_eq!(events[0].targets.len(), 2);
            assert_eq!(events[0].targets[0].id, "t1");
            assert_eq!(events[0].targets[1].kind, "team");
            assert_eq!(
                events[0].metadata.as_ref().unwrap().get("s"),
                Some(&crate::MetadataValue::String("a,b".into()))
            );
            assert_eq!(events[1].context.location, "multi\nline");
            assert!(events[1].targets.is_empty());
            assert!(events[1].metadata.is_none());
        }
    }

    #[tokio::test]
    async fn a_bad_row_names_row_and_column_and_reading_goes_on() {
        let text = "action,occurred_at,actor_id,actor_type,context_location,metadata\n\
            a.b,2024-01-02T03:04:05Z,u,user,here,\n\
            a.b,yesterday,u,user,here,\n\
            a.b,2024-01-02T03:04:05Z,u,user,here,\"{\"\"k\"\":null}\"\n\
            a.b,2024-01-02T03:04:05Z,u,user\n\
            a.b,2024-01-02T03:04:05Z,u,user,here,\n";
        let out = all(text, 5).await;
        assert_eq!(out.len(), 5);
        assert!(out[0].is_ok());
        match &out[1] {
            Err(ReadError::Row {
                row, line, column, ..
            }) => {
                assert_eq!((*row, *line, column.as_str()), (2, 3, "occurred_at"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&out[2], Err(ReadError::Row { row: 3, column, .. }) if column == "metadata"));
        assert!(
            matches!(&out[3], Err(ReadError::Row { row: 4, column, .. }) if column == "context_location")
        );
        assert!(out[4].is_ok());
    }

    #[tokio::test]
    async fn header_problems_end_the_stream() {
        let out = all("action,occurred_at\nx,y\n", 3).await;
        assert_eq!(out.len(), 1);
        assert!(matches!(&out[0], Err(ReadError::Header { message }) if message.contains("actor_id")));
        let out = all("", 3).await;
        assert!(matches!(&out[..], [Err(ReadError::Header { .. })]));
    }

    #[tokio::test]
    async fn a_huge_row_is_refused() {
        let mut text = String::from("action,occurred_at,actor_id,actor_type,context_location\n");
        text.push_str(&"x".repeat(3000));
        text.push_str(",2024-01-02T03:04:05Z,u,user,here\n");
        let progress = ReadProgress::new();
        let out: Vec<_> = parse(chunks(&text, 100), progress, 1024).collect().await;
        assert!(
            matches!(&out[..], [Err(ReadError::Row { row: 1, .. })]),
            "{out:?}"
        );
        let ok: Vec<Event> = parse_csv(chunks(&text, 100)).try_collect().await.unwrap();
        assert_eq!(ok[0].action.as_str().len(), 3000);
    }

    #[tokio::test]
    async fn a_line_of_commas_is_refused_by_its_cell_count() {
        let mut text = String::from("action,occurred_at,actor_id,actor_type,context_location\n");
        text.push_str(&",".repeat(MAX_ROW_FIELDS + 10));
        text.push('\n');
        let out: Vec<_> = parse_csv(chunks(&text, 4096)).collect().await;
        assert!(
            matches!(&out[..], [Err(ReadError::Row { row: 1, message, .. })] if message.contains("cells")),
            "{out:?}"
        );
    }

    #[tokio::test]
    async fn the_cell_list_counts_toward_the_row_bytes() {
        // 2,000 empty cells: 2 KiB of commas, but 16 KiB of cell ends.
        let mut text = String::from("action,occurred_at,actor_id,actor_type,context_location\n");
        text.push_str(&",".repeat(2_000));
        text.push('\n');
        let progress = ReadProgress::new();
        let out: Vec<_> = parse(chunks(&text, 512), progress, 8 * 1024).collect().await;
        assert!(
            matches!(&out[..], [Err(ReadError::Row { row: 1, message, .. })] if message.contains("bytes")),
            "{out:?}"
        );
    }
}
