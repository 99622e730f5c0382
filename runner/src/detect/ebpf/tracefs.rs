//! Tracepoint field offsets, read from tracefs `format` files at start so
//! nothing depends on one kernel's struct layout. Mounts tracefs if needed.

use std::{
    collections::HashMap,
    io,
    path::{Path, PathBuf},
};

/// Where tracefs lives on kernels 4.1 and later.
pub(crate) const TRACEFS: &str = "/sys/kernel/tracing";

/// Errors of reading tracepoint formats.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TracefsError {
    /// tracefs was not mounted and mounting it failed.
    #[error("tracefs not mounted at {TRACEFS} and mounting it failed")]
    Mount(#[source] io::Error),
    /// tracefs is mounted but its root-only directory cannot be searched.
    #[error("cannot read {TRACEFS}: it is root-only (needs CAP_DAC_READ_SEARCH)")]
    Denied(#[source] io::Error),
    /// A format file could not be read.
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A field the programs need is not in the tracepoint's format.
    #[error("tracepoint {tracepoint} has no field {field}")]
    MissingField {
        tracepoint: String,
        field: &'static str,
    },
}

/// Mounts tracefs at [`TRACEFS`] unless it is already there.
pub(crate) fn ensure_mounted() -> Result<(), TracefsError> {
    match std::fs::metadata(Path::new(TRACEFS).join("events")) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        // Mounted, but mode 0700: mounting again would not help.
        Err(err) if err.kind() == io::ErrorKind::PermissionDenied => {
            return Err(TracefsError::Denied(err));
        }
        _ => {}
    }
    let source = c"nodev";
    let target = c"/sys/kernel/tracing";
    let fstype = c"tracefs";
    // SAFETY: NUL-terminated strings that outlive the call; no data argument.
    let ret = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if ret != 0 {
        return Err(TracefsError::Mount(io::Error::last_os_error()));
    }
    Ok(())
}

/// One field of a tracepoint record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Field {
    pub(crate) offset: u32,
    pub(crate) size: u32,
}

/// The fields of one tracepoint, by name.
#[derive(Clone, Debug, Default)]
pub(crate) struct TracepointFormat {
    name: String,
    fields: HashMap<String, Field>,
}

impl TracepointFormat {
    /// Reads `events/<category>/<name>/format` under tracefs.
    pub(crate) fn read(category: &str, name: &str) -> Result<TracepointFormat, TracefsError> {
        let path = Path::new(TRACEFS)
            .join("events")
            .join(category)
            .join(name)
            .join("format");
        let text = std::fs::read_to_string(&path).map_err(|source| TracefsError::Read {
            path: path.clone(),
            source,
        })?;
        Ok(TracepointFormat::parse(
            &format!("{category}/{name}"),
            &text,
        ))
    }

    /// Parses the text of a format file. Lines that are not fields are
    /// skipped: the kernel adds a `print fmt` and may add more.
    pub(crate) fn parse(name: &str, text: &str) -> TracepointFormat {
        let mut fields = HashMap::new();
        for line in text.lines() {
            if let Some((field, value)) = parse_field(line) {
                fields.insert(field, value);
            }
        }
        TracepointFormat {
            name: name.to_string(),
            fields,
        }
    }

    /// Offset of `field`, an error naming the tracepoint when it is missing.
    pub(crate) fn offset(&self, field: &'static str) -> Result<u32, TracefsError> {
        self.field(field).map(|f| f.offset)
    }

    pub(crate) fn field(&self, field: &'static str) -> Result<Field, TracefsError> {
        self.fields
            .get(field)
            .copied()
            .ok_or_else(|| TracefsError::MissingField {
                tracepoint: self.name.clone(),
                field,
            })
    }
}

/// `\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;` -> `saddr`.
fn parse_field(line: &str) -> Option<(String, Field)> {
    let mut decl = None;
    let mut offset = None;
    let mut size = None;
    for part in line.trim().split(';') {
        let part = part.trim();
        if let Some(rest) = part.strip_prefix("field:") {
            decl = Some(rest);
        } else if let Some(rest) = part.strip_prefix("offset:") {
            offset = rest.parse().ok();
        } else if let Some(rest) = part.strip_prefix("size:") {
            size = rest.parse().ok();
        }
    }
    // The name is the last word of the C declaration, without `[N]`.
    let last = decl?.split_whitespace().last()?;
    let name = last.split('[').next()?.trim_start_matches('*');
    Some((
        name.to_string(),
        Field {
            offset: offset?,
            size: size?,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Verbatim from Linux 6.18.
    const SOCK: &str = "name: inet_sock_set_state
ID: 2287
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:int oldstate;\toffset:16;\tsize:4;\tsigned:1;
\tfield:int newstate;\toffset:20;\tsize:4;\tsigned:1;
\tfield:__u16 sport;\toffset:24;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:26;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:28;\tsize:2;\tsigned:0;
\tfield:__u16 protocol;\toffset:30;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:36;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:56;\tsize:16;\tsigned:0;

print fmt: \"family=%s protocol=%s sport=%hu\", REC->family";

    const FORK: &str = "name: sched_process_fork
ID: 366
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;
\tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;
\tfield:__data_loc char[] child_comm;\toffset:16;\tsize:4;\tsigned:0;
\tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;

print fmt: \"comm=%s pid=%d child_comm=%s child_pid=%d\", __get_str(parent_comm)";

    #[test]
    fn parses_sock_fields() {
        let f = TracepointFormat::parse("sock/inet_sock_set_state", SOCK);
        assert_eq!(f.offset("skaddr").unwrap(), 8);
        assert_eq!(f.offset("newstate").unwrap(), 20);
        assert_eq!(f.offset("protocol").unwrap(), 30);
        assert_eq!(
            f.field("saddr").unwrap(),
            Field {
                offset: 32,
                size: 4
            }
        );
        assert_eq!(
            f.field("saddr_v6").unwrap(),
            Field {
                offset: 40,
                size: 16
            }
        );
    }

    #[test]
    fn parses_data_loc_and_pid_fields() {
        let f = TracepointFormat::parse("sched/sched_process_fork", FORK);
        assert_eq!(f.offset("child_pid").unwrap(), 20);
        assert_eq!(f.offset("child_comm").unwrap(), 16);
    }

    #[test]
    fn missing_field_names_the_tracepoint() {
        let f = TracepointFormat::parse("sched/sched_process_fork", FORK);
        let err = f.offset("group_dead").unwrap_err().to_string();
        assert_eq!(
            err,
            "tracepoint sched/sched_process_fork has no field group_dead"
        );
    }

    #[test]
    fn garbage_gives_no_fields() {
        let f = TracepointFormat::parse("x/y", "field:\noffset:abc;size:;\n\0\u{fffd}");
        assert!(f.offset("x").is_err());
    }
}
