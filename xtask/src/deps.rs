//! `cargo xtask deps`: the imports between `runner/src`'s top-level modules
//! and the cycles among them (the layering `lib.rs` describes is
//! downward-only; a cycle breaks it).
//!
//! A text scan, not a compiler: it reads every `crate::name` path in
//! production code (comments, `tests.rs` files, `tests/` folders and the
//! `#[cfg(test)] mod tests` at a file's end left out). Good enough to
//! count, and fast.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

/// Module -> the modules it imports, each with a file that does.
type Graph = BTreeMap<String, BTreeMap<String, String>>;

/// Prints the edges that take part in a cycle, and the count; an error
/// when `max` is given and there are more cycles than that.
pub fn run(max: Option<usize>) -> Result<()> {
    let src = crate::cmd::workspace_root().join("runner/src");
    let graph = scan(&src)?;
    let cycles = cycles(&graph);
    for cycle in &cycles {
        println!("cycle: {}", cycle.join(" <-> "));
        for from in cycle {
            for (to, file) in &graph[from] {
                if cycle.contains(to) {
                    println!("  {from} -> {to}  ({file})");
                }
            }
        }
    }
    let pairs = mutual_pairs(&graph);
    for (a, b) in &pairs {
        println!("mutual: {a} <-> {b}  ({} / {})", graph[a][b], graph[b][a]);
    }
    println!(
        "{} cycle(s) between top-level modules ({} mutual pair(s))",
        cycles.len(),
        pairs.len()
    );
    if let Some(max) = max {
        anyhow::ensure!(cycles.len() <= max, "more than {max} cycle(s)");
    }
    Ok(())
}

/// The import graph of the top-level modules under `src`.
fn scan(src: &Path) -> Result<Graph> {
    let mut graph = Graph::new();
    for entry in fs::read_dir(src).with_context(|| format!("cannot read {}", src.display()))? {
        let path = entry?.path();
        let name = path.file_stem().unwrap_or_default().to_string_lossy();
        if matches!(name.as_ref(), "lib" | "main") {
            continue;
        }
        let imports = graph.entry(name.to_string()).or_default();
        for file in rust_files(&path)? {
            let text = fs::read_to_string(&file)?;
            let shown = file
                .strip_prefix(src)
                .unwrap_or(&file)
                .display()
                .to_string();
            for to in imports_of(&production(&text)) {
                if to != name {
                    imports.entry(to).or_insert_with(|| shown.clone());
                }
            }
        }
    }
    let known: BTreeSet<String> = graph.keys().cloned().collect();
    for imports in graph.values_mut() {
        imports.retain(|to, _| known.contains(to));
    }
    Ok(graph)
}

/// `path` itself or the `.rs` files under it, test files left out.
fn rust_files(path: &Path) -> Result<Vec<std::path::PathBuf>> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    if name == "tests" || name == "tests.rs" {
        return Ok(Vec::new());
    }
    if path.is_file() {
        let rust = path.extension().is_some_and(|e| e == "rs");
        return Ok(if rust {
            vec![path.to_owned()]
        } else {
            Vec::new()
        });
    }
    let mut files = Vec::new();
    for entry in fs::read_dir(path)? {
        files.extend(rust_files(&entry?.path())?);
    }
    Ok(files)
}

/// `text` without comments and without its trailing test module.
fn production(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim();
        if trimmed == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod tests"))
        {
            break;
        }
        let code = line.find("//").map_or(line, |at| &line[..at]);
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// The top-level modules `code` names: `crate::a::...` and the names in
/// `crate::{a, b::c}`.
fn imports_of(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                found.insert(ident(item.trim()));
            }
        } else {
            found.insert(ident(rest));
        }
    }
    found.retain(|name| !name.is_empty());
    found
}

fn ident(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// Pairs of modules that import each other.
fn mutual_pairs(graph: &Graph) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    for (from, imports) in graph {
        for to in imports.keys() {
            if from < to && graph.get(to).is_some_and(|back| back.contains_key(from)) {
                pairs.push((from.clone(), to.clone()));
            }
        }
    }
    pairs
}

/// The strongly connected components with more than one module, each
/// sorted (Tarjan's algorithm, iterative enough for a few dozen modules).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct Tarjan<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, node: &'a str) {
            let n = self.index.len();
            self.index.insert(node, n);
            self.low.insert(node, n);
            self.stack.push(node);
            self.on_stack.insert(node);
            for to in self.graph[node].keys() {
                let to = to.as_str();
                if !self.index.contains_key(to) {
                    self.visit(to);
                    let low = self.low[node].min(self.low[to]);
                    self.low.insert(node, low);
                } else if self.on_stack.contains(to) {
                    let low = self.low[node].min(self.index[to]);
                    self.low.insert(node, low);
                }
            }
            if self.low[node] == self.index[node] {
                let mut component = Vec::new();
                while let Some(top) = self.stack.pop() {
                    self.on_stack.remove(top);
                    component.push(top.to_owned());
                    if top == node {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.out.push(component);
                }
            }
        }
    }
    let mut tarjan = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for node in graph.keys() {
        if !tarjan.index.contains_key(node.as_str()) {
            tarjan.visit(node);
        }
    }
    tarjan.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouped_and_inline_paths_count_and_comments_and_tests_do_not() {
        let code = production(
            "use crate::{a, b::C};\nlet x = crate::c::f(); // crate::d\n#[cfg(test)]\nmod tests {\n use crate::e;\n}\n",
        );
        let found: Vec<String> = imports_of(&code).into_iter().collect();
        assert_eq!(found, ["a", "b", "c"]);
    }

    #[test]
    fn a_mutual_import_is_one_cycle_and_a_chain_is_none() {
        let edge = |to: &str| (to.to_owned(), String::new());
        let mut graph = Graph::new();
        graph.insert("a".into(), [edge("b")].into());
        graph.insert("b".into(), [edge("a"), edge("c")].into());
        graph.insert("c".into(), BTreeMap::new());
        assert_eq!(cycles(&graph), [["a", "b"]]);
        assert_eq!(mutual_pairs(&graph), [("a".into(), "b".into())]);
        graph.get_mut("b").unwrap().remove("a");
        assert!(cycles(&graph).is_empty());
    }
}
