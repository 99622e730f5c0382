//! The attributes of a listener: the user's `[[ports]]` entries first, then
//! those of the project file in the listener's cwd; the first match wins.

use crate::detect::process_info::ProcessInfo;

use super::ports::{PortAttributes, PortRule, first_match};
use super::project::ProjectFiles;

/// Resolves attributes; owned by the pipeline, which asks for every
/// listener it sees.
#[derive(Debug, Default)]
pub(crate) struct AttributeResolver {
    user: Vec<PortRule>,
    projects: ProjectFiles,
}

impl AttributeResolver {
    pub(crate) fn new(user: Vec<PortRule>) -> Self {
        AttributeResolver {
            user,
            projects: ProjectFiles::default(),
        }
    }

    pub(crate) fn attributes(&mut self, port: u16, process: &ProcessInfo) -> PortAttributes {
        if let Some(found) = first_match(&self.user, port, process) {
            return found.clone();
        }
        let Some(cwd) = &process.cwd else {
            return PortAttributes::default();
        };
        first_match(self.projects.rules(cwd), port, process)
            .cloned()
            .unwrap_or_default()
    }
}
