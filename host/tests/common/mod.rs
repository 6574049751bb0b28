//! A redb storage backend for crash tests.
//!
//! [`CrashDisk`] keeps the image as of the last successful `sync_data` apart
//! from the writes made since. A crash ends the running handle (every later
//! access fails, as on a machine that lost power) and returns a new disk
//! holding the synced image plus whichever unsynced writes the caller keeps:
//! none, for a disk that honours fsync and nothing more, or any subset, for
//! one that wrote some pages back on its own before the power went.

use std::io;
use std::sync::{Arc, Mutex};

use redb::StorageBackend;

#[derive(Debug, Clone, Default)]
pub struct CrashDisk(Arc<Mutex<Disk>>);

#[derive(Debug, Default)]
struct Disk {
    /// What reads see: the synced image with every later change.
    current: Vec<u8>,
    /// The image as of the last successful sync.
    synced: Vec<u8>,
    /// The changes since that sync, in order.
    unsynced: Vec<Change>,
    /// Set by a crash: this handle is dead.
    crashed: bool,
    /// Syncs still to fail.
    failing_syncs: u32,
    /// Writes (and length changes and syncs) left before the power goes.
    power_left: Option<u32>,
}

#[derive(Debug, Clone)]
enum Change {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

impl Change {
    fn apply(&self, image: &mut Vec<u8>) {
        match self {
            Change::Write(offset, data) => {
                let (start, end) = (*offset as usize, *offset as usize + data.len());
                if image.len() < end {
                    image.resize(end, 0);
                }
                image[start..end].copy_from_slice(data);
            }
            Change::SetLen(len) => image.resize(*len as usize, 0),
        }
    }
}

impl CrashDisk {
    /// Makes the next `n` syncs fail (and leaves their writes unsynced).
    pub fn fail_syncs(&self, n: u32) {
        self.0.lock().unwrap().failing_syncs = n;
    }

    /// Pulls the plug: this disk fails every access from now on, and the
    /// returned one holds the synced image plus the unsynced changes
    /// `keep` selects (called once per change, in order).
    pub fn crash(&self, mut keep: impl FnMut() -> bool) -> CrashDisk {
        let mut d = self.0.lock().unwrap();
        d.crashed = true;
        let mut image = d.synced.clone();
        for change in &d.unsynced {
            if keep() {
                change.apply(&mut image);
            }
        }
        CrashDisk(Arc::new(Mutex::new(Disk { current: image.clone(), synced: image, ..Disk::default() })))
    }

    /// Cuts the power in the middle of what comes: the disk carries out
    /// `n` more writes, length changes or syncs, then fails that one and
    /// everything after, as if the machine had died there. (Then
    /// [`CrashDisk::crash`] gives the image a restart finds.)
    pub fn cut_power_after(&self, n: u32) {
        self.0.lock().unwrap().power_left = Some(n);
    }

    fn live(&self) -> io::Result<std::sync::MutexGuard<'_, Disk>> {
        let d = self.0.lock().unwrap();
        if d.crashed {
            return Err(io::Error::other("the disk is gone (crashed)"));
        }
        Ok(d)
    }

    /// [`CrashDisk::live`], for an operation that changes the disk: it
    /// counts against a pending power cut.
    fn changing(&self) -> io::Result<std::sync::MutexGuard<'_, Disk>> {
        let mut d = self.live()?;
        match d.power_left {
            Some(0) => {
                d.crashed = true;
                Err(io::Error::other("the power went (injected)"))
            }
            Some(n) => {
                d.power_left = Some(n - 1);
                Ok(d)
            }
            None => Ok(d),
        }
    }
}

impl StorageBackend for CrashDisk {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(self.live()?.current.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let d = self.live()?;
        let start = offset as usize;
        let source = d
            .current
            .get(start..start + out.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"))?;
        out.copy_from_slice(source);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut d = self.changing()?;
        let change = Change::SetLen(len);
        change.apply(&mut d.current);
        d.unsynced.push(change);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        let mut d = self.changing()?;
        if d.failing_syncs > 0 {
            d.failing_syncs -= 1;
            return Err(io::Error::other("fsync failed (injected)"));
        }
        d.synced = d.current.clone();
        d.unsynced.clear();
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut d = self.changing()?;
        let change = Change::Write(offset, data.to_vec());
        change.apply(&mut d.current);
        d.unsynced.push(change);
        Ok(())
    }
}
