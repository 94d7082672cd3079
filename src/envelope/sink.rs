//! Where the payload ciphertext waits while M streams in: part 1 (the
//! summary) must precede part 2 (the payload) in the sealed message, and the
//! summary is known only at the end. The sink holds ciphertext only, in
//! memory up to a threshold and in an unnamed temporary file beyond it, so
//! plaintext never touches disk and memory stays bounded.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

pub struct Sink {
    memory: Vec<u8>,
    file: Option<io::BufWriter<File>>,
    threshold: usize,
    temp_dir: Option<PathBuf>,
}

impl Sink {
    pub fn new(threshold: usize, temp_dir: Option<PathBuf>) -> Sink {
        Sink {
            memory: Vec::new(),
            file: None,
            threshold,
            temp_dir,
        }
    }

    /// Did the ciphertext spill to a temporary file?
    #[cfg(test)]
    pub fn spilled(&self) -> bool {
        self.file.is_some()
    }

    fn spill(&mut self) -> io::Result<()> {
        // An unnamed file (O_TMPFILE or unlinked at once): nothing to clean
        // up after a crash, nothing another process can open by name.
        let mut f = match &self.temp_dir {
            Some(d) => tempfile::tempfile_in(d)?,
            None => tempfile::tempfile()?,
        };
        f.write_all(&self.memory)?;
        self.memory = Vec::new();
        self.file = Some(io::BufWriter::with_capacity(256 * 1024, f));
        Ok(())
    }

    /// Copies everything written into `out`, from the start.
    pub fn copy_to(&mut self, out: &mut dyn Write) -> io::Result<u64> {
        match &mut self.file {
            None => {
                out.write_all(&self.memory)?;
                Ok(self.memory.len() as u64)
            }
            Some(w) => {
                w.flush()?;
                let f = w.get_mut();
                f.seek(SeekFrom::Start(0))?;
                let mut r = io::BufReader::with_capacity(64 * 1024, f);
                let mut buf = vec![0u8; 64 * 1024];
                let mut total = 0u64;
                loop {
                    let n = r.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    out.write_all(&buf[..n])?;
                    total += n as u64;
                }
                Ok(total)
            }
        }
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.file.is_none() && self.memory.len() + buf.len() > self.threshold {
            self.spill()?;
        }
        match &mut self.file {
            Some(f) => f.write_all(buf)?,
            None => self.memory.extend_from_slice(buf),
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spills_past_the_threshold_and_reads_back_in_order() {
        let mut s = Sink::new(10, None);
        s.write_all(b"0123456789").unwrap();
        assert!(!s.spilled());
        s.write_all(b"abc").unwrap();
        assert!(s.spilled());
        let mut out = Vec::new();
        assert_eq!(s.copy_to(&mut out).unwrap(), 13);
        assert_eq!(out, b"0123456789abc");
    }
}
