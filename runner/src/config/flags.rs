//! The file's values for flags become the flags' defaults, so clap keeps
//! the precedence (flag, then environment, then file, then the built-in
//! default) and checks file values with the flag's own parser. Each
//! default is stated once, in `cli.rs`.

use std::ffi::OsStr;
use std::path::Path;

use clap::Command;

use super::file::FlagValue;
use super::load::ConfigError;

/// `command` with the file's values as the defaults of its subcommands'
/// flags (those a subcommand has). A value the flag refuses is an error
/// naming the file, the line and the key.
pub(crate) fn apply(
    mut command: Command,
    values: &[FlagValue],
    path: &Path,
    text: &str,
) -> Result<Command, ConfigError> {
    // The flags every command takes (`--log-format`, `--quiet`) are the
    // top command's own, copied to the subcommands when clap builds.
    for value in own_values(&command, values, path, text)? {
        command = command.mut_arg(value.arg_id, |arg| arg.default_values(value.values.clone()));
    }
    let names: Vec<String> = command
        .get_subcommands()
        .map(|sub| sub.get_name().to_owned())
        .collect();
    for name in names {
        let Some(sub) = command.find_subcommand(&name) else {
            continue;
        };
        let sub_values = own_values(sub, values, path, text)?;
        if sub_values.is_empty() {
            continue;
        }
        command = command.mut_subcommand(&name, |mut sub| {
            for value in sub_values {
                sub = sub.mut_arg(value.arg_id, |arg| {
                    arg.default_values(value.values.clone()).required(false)
                });
            }
            sub
        });
    }
    Ok(command)
}

/// The file's values for `command`'s own flags, each checked by its parser.
fn own_values<'a>(
    command: &Command,
    values: &'a [FlagValue],
    path: &Path,
    text: &str,
) -> Result<Vec<&'a FlagValue>, ConfigError> {
    let mut own = Vec::new();
    for value in values {
        let Some(arg) = (command.get_arguments()).find(|arg| arg.get_id().as_str() == value.arg_id)
        else {
            continue;
        };
        check(arg, value).map_err(|message| bad_value(path, text, value, &message))?;
        own.push(value);
    }
    Ok(own)
}

fn bad_value(path: &Path, text: &str, value: &FlagValue, message: &str) -> ConfigError {
    ConfigError::at(
        path,
        text,
        value.span.clone(),
        format!("{}: {message}", value.key),
    )
}

/// Runs the flag's value parser over each value of the file, in a
/// command of its own (clap keeps the parser's own entry point private).
fn check(arg: &clap::Arg, value: &FlagValue) -> Result<(), String> {
    let probe = clap::Arg::new("value")
        .long("value")
        .action(clap::ArgAction::Set)
        .allow_hyphen_values(true)
        .value_parser(arg.get_value_parser().clone());
    let command = Command::new("check").no_binary_name(true).arg(probe);
    for text in &value.values {
        command
            .clone()
            .try_get_matches_from([OsStr::new("--value"), OsStr::new(text)])
            .map_err(|err| clap_message(&err))?;
    }
    Ok(())
}

/// clap's error on one line, without its `error: ` prefix and the flag's
/// name (the key is named instead).
fn clap_message(err: &clap::Error) -> String {
    let rendered = err.render().to_string();
    let first = rendered.lines().next().unwrap_or_default();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    // "invalid value 'x' for '--flag <V>': why" -> "invalid value 'x': why"
    match (first.find(" for '"), first.find("': ")) {
        (Some(start), Some(end)) if end > start => {
            format!("{}{}", &first[..start], &first[end + 1..])
        }
        _ => first.to_owned(),
    }
}
