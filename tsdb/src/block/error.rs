//! The error every block decoder returns: which file, which section, what was wrong.
//!
//! Decoders never panic on corrupt or truncated input; they return a [`BlockError`] whose
//! message reads like `index: postings offset table: CRC mismatch`.

use std::borrow::Cow;
use std::fmt;

/// What was wrong with the bytes of a section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// The bytes end before the section does.
    Truncated,
    /// The stored CRC32 (Castagnoli) does not match the bytes.
    CrcMismatch {
        /// The checksum stored in the file.
        stored: u32,
        /// The checksum of the bytes as read.
        computed: u32,
    },
    /// The file does not start with the expected magic number.
    BadMagic(u32),
    /// A format version this crate does not read.
    UnsupportedVersion(u8),
    /// A varint runs past 10 bytes or overflows 64 bits.
    BadVarint,
    /// A value the format does not allow.
    Invalid(Cow<'static, str>),
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("truncated"),
            Self::CrcMismatch { stored, computed } => write!(
                f,
                "CRC mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            Self::BadMagic(m) => write!(f, "invalid magic number {m:#010x}"),
            Self::UnsupportedVersion(v) => write!(f, "unsupported format version {v}"),
            Self::BadVarint => f.write_str("invalid varint"),
            Self::Invalid(why) => f.write_str(why),
        }
    }
}

/// A corrupt, truncated or unsupported block file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {section}: {kind}")]
pub struct BlockError {
    /// The file, relative to the block directory (`index`, `chunks/000001`, `tombstones`).
    pub file: Cow<'static, str>,
    /// The section of the file (`TOC`, `symbol table`, `series 12`, ...).
    pub section: Cow<'static, str>,
    /// What was wrong.
    pub kind: ErrorKind,
}

impl BlockError {
    /// An error in `file`, `section`.
    pub fn new(
        file: impl Into<Cow<'static, str>>,
        section: impl Into<Cow<'static, str>>,
        kind: ErrorKind,
    ) -> Self {
        Self {
            file: file.into(),
            section: section.into(),
            kind,
        }
    }

    /// An [`ErrorKind::Invalid`] error.
    pub fn invalid(
        file: impl Into<Cow<'static, str>>,
        section: impl Into<Cow<'static, str>>,
        why: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self::new(file, section, ErrorKind::Invalid(why.into()))
    }

    /// Whether the bytes ended too early (the caller may fetch more and retry).
    pub fn is_truncated(&self) -> bool {
        self.kind == ErrorKind::Truncated
    }
}

/// Why writing a block failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The sink failed.
    #[error("writing {file}: {source}")]
    Io {
        /// The file being written, relative to the block directory.
        file: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The caller's input breaks a rule of the format (order, time ranges, sizes).
    #[error("invalid block input: {0}")]
    Input(String),
}

impl WriteError {
    pub(crate) fn io(file: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            file: file.into(),
            source,
        }
    }
}
