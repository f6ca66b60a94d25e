//! `flusher_stdout`: one JSON object per line on standard output.

use std::io::Write;

use anyhow::{Context, Result};

use super::Flusher;
use crate::records::{write_lines, Record};

pub struct Stdout;

impl Flusher for Stdout {
    fn flush(&mut self, records: &[Record]) -> Result<()> {
        let mut out = std::io::stdout().lock();
        write_lines(&mut out, records).context("writing records to stdout")?;
        out.flush().context("flushing stdout")
    }
}
