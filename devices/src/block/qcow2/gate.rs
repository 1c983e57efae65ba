//! Opening a qcow2 image's implicit dependencies (backing chain, external data file)
//! while remembering which file failed, so the error can name it.

use std::cell::RefCell;
use std::io;
use std::path::PathBuf;
use std::rc::Rc;

use imago::file::File as ImagoFile;
use imago::format::gate::ImplicitOpenGate;
use imago::{FormatAccess, FormatDriverBuilder, Storage, StorageOpenOptions};

/// The first dependency that could not be opened.
#[derive(Debug, Clone)]
pub(super) struct FailedOpen {
    pub path: PathBuf,
    pub kind: io::ErrorKind,
    pub os_error: Option<i32>,
}

/// Opens everything the image references (the images come from the host's
/// configuration, so they are trusted like `PermissiveImplicitOpenGate` assumes), and
/// records the first failure. Relative backing file names are resolved by imago against
/// the directory of the image naming them.
#[derive(Debug, Clone, Default)]
pub(super) struct RecordingGate {
    failed: Rc<RefCell<Option<FailedOpen>>>,
}

impl RecordingGate {
    pub(super) fn failure(&self) -> Option<FailedOpen> {
        self.failed.borrow().clone()
    }
}

impl ImplicitOpenGate<ImagoFile> for RecordingGate {
    fn open_format<F: FormatDriverBuilder<ImagoFile>>(
        &mut self,
        builder: F,
    ) -> io::Result<FormatAccess<ImagoFile>> {
        let image = builder.open(self.clone())?;
        Ok(FormatAccess::new(image))
    }

    fn open_storage(&mut self, opts: StorageOpenOptions) -> io::Result<ImagoFile> {
        let path = opts.get_filename().map(PathBuf::from).unwrap_or_default();
        ImagoFile::open(opts).inspect_err(|e| {
            let mut failed = self.failed.borrow_mut();
            if failed.is_none() {
                *failed = Some(FailedOpen {
                    path,
                    kind: e.kind(),
                    os_error: e.raw_os_error(),
                });
            }
        })
    }
}
