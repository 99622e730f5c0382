//! The short name shown next to a port (PROTOCOL.md section 1, `label`):
//! the tool a person started, not the interpreter that runs it. A shebang
//! script's command line starts with its interpreter (`node
//! /x/node_modules/.bin/vite`, `python3 /venv/bin/uvicorn app:app`), so the
//! program's name alone says `node` or `python3` for most dev servers.
//!
//! In order: a known tool the command line shows ([`TOOLS`], looking
//! through interpreters and launchers); else the base name of the script an
//! interpreter runs (`node x/server.js` -> `server.js`); else the base name
//! of the first word. A `[[ports]]` entry's `label` wins over all of these
//! (applied in the pipeline).

/// Known tools by the names they show up as (script, package, module or
/// program name), and the label each gets.
const TOOLS: &[(&str, &str)] = &[
    ("vite", "vite"),
    ("next", "next"),
    // `next dev` serves from a child that renames itself `next-server (vX)`.
    ("next-server", "next"),
    ("webpack", "webpack"),
    ("webpack-cli", "webpack"),
    ("webpack-dev-server", "webpack"),
    ("astro", "astro"),
    ("nuxt", "nuxt"),
    ("nuxi", "nuxt"),
    ("remix", "remix"),
    ("remix-serve", "remix"),
    ("@remix-run/dev", "remix"),
    ("@remix-run/serve", "remix"),
    ("svelte-kit", "svelte-kit"),
    ("@sveltejs/kit", "svelte-kit"),
    ("parcel", "parcel"),
    ("storybook", "storybook"),
    ("start-storybook", "storybook"),
    ("flask", "flask"),
    ("django", "django"),
    ("django-admin", "django"),
    ("uvicorn", "uvicorn"),
    ("gunicorn", "gunicorn"),
    ("hypercorn", "hypercorn"),
    ("fastapi", "fastapi"),
    ("rails", "rails"),
    ("puma", "puma"),
    ("jupyter", "jupyter"),
    ("jupyter-lab", "jupyter"),
    ("jupyter-notebook", "jupyter"),
    ("jupyter-server", "jupyter"),
    ("jupyterlab", "jupyter"),
    ("notebook", "jupyter"),
    ("streamlit", "streamlit"),
    ("http.server", "http.server"),
];

/// The label of a process started as `argv`.
pub(crate) fn label_of(argv: &[String]) -> String {
    let Some(first) = argv.first() else {
        return String::new();
    };
    tool_of(argv, 0)
        .or_else(|| script_of(argv))
        .unwrap_or_else(|| base_name(first).to_owned())
}

/// The base name of the script an interpreter runs (`node x/server.js`,
/// `python3 app.py`, `ruby app.rb`); none for inline code, a module
/// (`python3 -m pkg`) or a program that is no interpreter.
fn script_of(argv: &[String]) -> Option<String> {
    let first = argv.first()?;
    let program = base_name(first.split_whitespace().next().unwrap_or(first));
    let rest = &argv[1..];
    let script = match interpreter(program)? {
        Interpreter::Node => after_flags(rest, NODE_VALUE_FLAGS, NODE_CODE_FLAGS, false)?,
        Interpreter::Python => after_flags(rest, PYTHON_VALUE_FLAGS, &["-c"], true)?,
        Interpreter::Ruby => after_flags(rest, RUBY_VALUE_FLAGS, &["-e"], false)?,
        Interpreter::Launcher(_) => return None,
    }
    .first()?;
    if script.starts_with('-') {
        return None;
    }
    Some(base_name(script).to_owned()).filter(|name| !name.is_empty())
}

/// The known tool `argv` runs, looking through interpreters and launchers
/// (`bundle exec`, `npx`, `uv run`) at most a few levels deep.
fn tool_of(argv: &[String], depth: usize) -> Option<String> {
    let first = argv.first()?;
    // A process that rewrote its title may show it as one argument.
    let program = base_name(first.split_whitespace().next().unwrap_or(first));
    if let Some(tool) = known(program) {
        return Some(tool.to_owned());
    }
    let rest = &argv[1..];
    if depth >= 3 {
        return None;
    }
    match interpreter(program)? {
        Interpreter::Node => {
            script_tool(after_flags(rest, NODE_VALUE_FLAGS, NODE_CODE_FLAGS, false)?)
        }
        Interpreter::Python => {
            let rest = after_flags(rest, PYTHON_VALUE_FLAGS, &["-c"], true)?;
            match rest.split_first()? {
                (flag, module) if flag == "-m" => known(module.first()?).map(str::to_owned),
                (module, _) if module.starts_with("-m") => known(&module[2..]).map(str::to_owned),
                // Django's runner, only when it runs the server.
                (script, args) if base_name(script) == "manage.py" => {
                    (args.first().is_some_and(|arg| arg == "runserver"))
                        .then(|| "django".to_owned())
                }
                _ => script_tool(rest),
            }
        }
        Interpreter::Ruby => script_tool(after_flags(rest, RUBY_VALUE_FLAGS, &["-e"], false)?),
        Interpreter::Launcher(subcommand) => {
            let rest = match (subcommand, rest.split_first()) {
                (None, _) => rest,
                (Some(word), Some((first, tail))) if first == word => tail,
                (Some(_), _) => return None,
            };
            // `npx --yes vite`: the launcher's own flags come first.
            let start = rest.iter().position(|arg| !arg.starts_with('-'))?;
            tool_of(&rest[start..], depth + 1)
        }
    }
}

#[derive(Clone, Copy)]
enum Interpreter {
    Node,
    Python,
    Ruby,
    /// Runs the next word as a program, after this subcommand if any.
    Launcher(Option<&'static str>),
}

fn interpreter(program: &str) -> Option<Interpreter> {
    // `python3.12`, `ruby3.3`: a version suffix is the same interpreter.
    let versioned = |name: &str| {
        program
            .strip_prefix(name)
            .is_some_and(|rest| rest.chars().all(|c| c.is_ascii_digit() || c == '.'))
    };
    Some(match program {
        "node" | "nodejs" | "bun" => Interpreter::Node,
        _ if versioned("python") => Interpreter::Python,
        _ if versioned("ruby") => Interpreter::Ruby,
        "npx" | "pnpx" | "bunx" => Interpreter::Launcher(None),
        "bundle" => Interpreter::Launcher(Some("exec")),
        "uv" | "poetry" | "pipenv" => Interpreter::Launcher(Some("run")),
        _ => return None,
    })
}

/// Interpreter flags that take the next argument as their value.
const NODE_VALUE_FLAGS: &[&str] = &[
    "-r",
    "--require",
    "--import",
    "--loader",
    "--experimental-loader",
    "--env-file",
    "--conditions",
    "-C",
    "--title",
];
const NODE_CODE_FLAGS: &[&str] = &["-e", "--eval", "-p", "--print"];
const PYTHON_VALUE_FLAGS: &[&str] = &["-X", "-W", "-Q"];
const RUBY_VALUE_FLAGS: &[&str] = &["-I", "-r", "-C", "-E", "-F"];

/// The arguments from the script (or, with `modules`, `-m`) on, skipping
/// the interpreter's own flags; `None` when the code is inline (`-c`,
/// `-e`, stdin) or there is no script.
fn after_flags<'a>(
    args: &'a [String],
    value_flags: &[&str],
    code_flags: &[&str],
    modules: bool,
) -> Option<&'a [String]> {
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        if !arg.starts_with('-') || modules && arg.starts_with("-m") {
            return Some(&args[i..]);
        }
        if arg == "-" || code_flags.contains(&arg.as_str()) {
            return None;
        }
        i += if value_flags.contains(&arg.as_str()) {
            2
        } else {
            1
        };
    }
    None
}

/// The tool a script path belongs to: its own name (`.bin/vite`,
/// `bin/rails`, `svelte-kit.js`), else the npm package it sits in
/// (`node_modules/storybook/bin/index.cjs`).
fn script_tool(args: &[String]) -> Option<String> {
    let script = args.first()?;
    let name = base_name(script);
    let stem = [".js", ".mjs", ".cjs", ".ts"]
        .iter()
        .find_map(|ext| name.strip_suffix(ext))
        .unwrap_or(name);
    if let Some(tool) = known(stem) {
        return Some(tool.to_owned());
    }
    let (_, inside) = script.rsplit_once("node_modules/")?;
    let mut parts = inside.split('/');
    let package = match parts.next()? {
        scope if scope.starts_with('@') => format!("{scope}/{}", parts.next()?),
        package => package.to_owned(),
    };
    known(&package).map(str::to_owned)
}

fn known(name: &str) -> Option<&'static str> {
    TOOLS
        .iter()
        .find(|(seen, _)| *seen == name)
        .map(|(_, label)| *label)
}

fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(command: &str) -> String {
        let argv: Vec<String> = command.split(' ').map(str::to_owned).collect();
        label_of(&argv)
    }

    #[test]
    fn names_the_tool_behind_node() {
        for (command, expected) in [
            ("node /x/node_modules/.bin/vite", "vite"),
            ("node /x/node_modules/vite/bin/vite.js --host", "vite"),
            ("node /x/node_modules/next/dist/bin/next dev", "next"),
            ("next-server (v14.2.3)", "next"),
            ("node /x/node_modules/.bin/webpack serve", "webpack"),
            ("node /x/node_modules/.bin/webpack-dev-server", "webpack"),
            ("node /x/node_modules/astro/astro.js dev", "astro"),
            ("node /x/node_modules/nuxi/bin/nuxi.mjs dev", "nuxt"),
            (
                "node /x/node_modules/@remix-run/dev/dist/cli.js dev",
                "remix",
            ),
            (
                "node /x/node_modules/@sveltejs/kit/svelte-kit.js dev",
                "svelte-kit",
            ),
            ("node /x/node_modules/.bin/parcel index.html", "parcel"),
            (
                "node /x/node_modules/storybook/bin/index.cjs dev -p 6006",
                "storybook",
            ),
            (
                "node --inspect=9229 -r ts-node/register /x/node_modules/.bin/vite",
                "vite",
            ),
            ("/usr/local/bin/node /x/node_modules/.bin/vite", "vite"),
            ("npx vite", "vite"),
            ("npx --yes vite --port 5173", "vite"),
            ("bun /x/node_modules/.bin/vite", "vite"),
        ] {
            assert_eq!(label(command), expected, "{command}");
        }
    }

    #[test]
    fn names_the_tool_behind_python_and_ruby() {
        for (command, expected) in [
            ("python3 manage.py runserver", "django"),
            ("python manage.py runserver 0.0.0.0:8000", "django"),
            ("python -m flask run", "flask"),
            ("/venv/bin/python3 /venv/bin/flask run --port 5000", "flask"),
            ("/usr/bin/python3 -m uvicorn app:app", "uvicorn"),
            ("python3 -u -X dev -m uvicorn app:app --reload", "uvicorn"),
            ("/venv/bin/python /venv/bin/gunicorn app:app", "gunicorn"),
            ("python3.12 /venv/bin/hypercorn app:app", "hypercorn"),
            ("python3 /venv/bin/fastapi dev main.py", "fastapi"),
            ("python -m jupyter lab", "jupyter"),
            (
                "/usr/bin/python3 /usr/local/bin/jupyter-lab --no-browser",
                "jupyter",
            ),
            ("python3 -m notebook", "jupyter"),
            ("python3 -m streamlit run app.py", "streamlit"),
            ("python3 -m http.server 8000", "http.server"),
            ("python3 -mhttp.server", "http.server"),
            ("bundle exec rails server", "rails"),
            ("ruby bin/rails s", "rails"),
            ("ruby -Ilib /x/bin/puma -p 3000", "puma"),
            (
                "/home/u/.rbenv/versions/3.3.0/bin/ruby bin/rails server",
                "rails",
            ),
            ("uv run uvicorn app:app", "uvicorn"),
        ] {
            assert_eq!(label(command), expected, "{command}");
        }
    }

    #[test]
    fn else_the_script_an_interpreter_runs() {
        for (command, expected) in [
            ("node x/server.js", "server.js"),
            ("node --inspect /srv/app/index.mjs", "index.mjs"),
            ("python3 app.py", "app.py"),
            ("python3 -u /srv/listener.py --port 1", "listener.py"),
            ("python3 manage.py migrate", "manage.py"),
            ("ruby -Ilib app.rb", "app.rb"),
        ] {
            assert_eq!(label(command), expected, "{command}");
        }
    }

    #[test]
    fn anything_else_keeps_the_program_name() {
        for (command, expected) in [
            ("sh -c vite", "sh"),
            ("/bin/bash -c npm run dev", "bash"),
            ("python3 -c import http.server", "python3"),
            ("python3 -m mymodule", "python3"),
            ("python3", "python3"),
            ("node -e require('vite')", "node"),
            ("node", "node"),
            ("ruby -e puts", "ruby"),
            ("npx", "npx"),
            ("bundle install", "bundle"),
            ("/usr/sbin/nginx -g daemon off;", "nginx"),
            ("python3-config", "python3-config"),
        ] {
            assert_eq!(label(command), expected, "{command}");
        }
        assert_eq!(label_of(&[]), "");
    }
}
