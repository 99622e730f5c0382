//! `install` and `uninstall`: the files, their modes, and a line on stdout
//! for each file written, kept or removed. systemctl is left to the user
//! (the line to run is printed): enabling a service is theirs to decide.

use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::ServiceError;
use super::layout::{Layout, NAME, Scope};
use super::systemd;

const UNIT_MODE: u32 = 0o644;
/// The environment file and the token are the user's secrets.
const SECRET_MODE: u32 = 0o600;
const CONFIG_DIR_MODE: u32 = 0o700;

pub(crate) fn install(layout: &Layout) -> Result<(), ServiceError> {
    let unit_file = layout.unit_file();
    create_dir(&layout.unit_dir, 0o755)?;
    fs::write(&unit_file, systemd::unit(layout))
        .and_then(|()| fs::set_permissions(&unit_file, fs::Permissions::from_mode(UNIT_MODE)))
        .map_err(io("write", &unit_file))?;
    println!("wrote {} (mode {UNIT_MODE:04o})", unit_file.display());

    if let Some(dir) = layout.env_file.parent() {
        create_dir(dir, CONFIG_DIR_MODE)?;
    }
    let created = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(SECRET_MODE)
        .open(&layout.env_file);
    match created {
        Ok(mut file) => {
            file.write_all(systemd::env_template(&layout.token_file).as_bytes())
                .map_err(io("write", &layout.env_file))?;
            println!(
                "wrote {} (mode {SECRET_MODE:04o}): set KANDAN_URL there",
                layout.env_file.display()
            );
        }
        Err(err) if err.kind() == ErrorKind::AlreadyExists => {
            println!("kept {} (it exists)", layout.env_file.display());
        }
        Err(err) => return Err(io("create", &layout.env_file)(err)),
    }

    if !layout.token_file.exists() {
        println!(
            "next: write the token alone to {} (mode {SECRET_MODE:04o})",
            layout.token_file.display()
        );
    }
    let systemctl = layout.systemctl();
    println!("then run: {systemctl} daemon-reload && {systemctl} enable --now {NAME}");
    Ok(())
}

pub(crate) fn uninstall(layout: &Layout) -> Result<(), ServiceError> {
    let unit_file = layout.unit_file();
    // `systemctl enable` links the unit into its target's .wants directory;
    // a link left behind would dangle.
    let target = match layout.scope {
        Scope::System { .. } => "multi-user.target",
        Scope::User => "default.target",
    };
    let wanted = layout
        .unit_dir
        .join(format!("{target}.wants"))
        .join(format!("{NAME}.service"));
    for path in [&unit_file, &wanted] {
        match fs::remove_file(path) {
            Ok(()) => println!("removed {}", path.display()),
            Err(err) if err.kind() == ErrorKind::NotFound => {
                if path == &unit_file {
                    println!("nothing to remove: {} does not exist", path.display());
                }
            }
            Err(err) => return Err(io("remove", path)(err)),
        }
    }
    for path in [&layout.env_file, &layout.token_file] {
        if path.exists() {
            println!(
                "kept {} (your settings; remove it yourself)",
                path.display()
            );
        }
    }
    let systemctl = layout.systemctl();
    println!("then run: {systemctl} stop {NAME}; {systemctl} daemon-reload");
    Ok(())
}

/// Creates `dir` and its missing parents with `mode` (an existing one is
/// left as it is).
fn create_dir(dir: &Path, mode: u32) -> Result<(), ServiceError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(io("create", dir))
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ServiceError {
    let path = path.to_path_buf();
    move |source| ServiceError::Io {
        action,
        path,
        source,
    }
}
