//! The rule that keeps the crate layered: no cycle among its top-level
//! modules. A cycle is how `state` ended up depending on every feature and
//! every feature on `state`; this check reads the source (every `crate::x`
//! path outside comments and `#[cfg(test)]` modules, `use crate::{...}`
//! groups included) and fails naming the cycle.
//!
//! `lib.rs` is the composition root and may use everything; it is not part
//! of the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level module -> the top-level modules its code refers to.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Names of the modules `lib.rs` declares.
fn top_level_modules() -> Vec<String> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("read lib.rs");
    lib.lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l.strip_prefix("pub mod ").or_else(|| l.strip_prefix("mod "))?;
            Some(rest.trim_end_matches(';').trim().to_owned())
        })
        .collect()
}

/// Every `.rs` file of a module: `src/x.rs` and everything under `src/x/`.
fn files_of(module: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let file = src().join(format!("{module}.rs"));
    if file.exists() {
        out.push(file);
    }
    let mut stack = vec![src().join(module)];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out
}

/// The code of a file without comments and without its `#[cfg(test)]` items
/// (test code may reach anywhere).
fn code(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if t.starts_with("//") {
            continue;
        }
        if t.starts_with("#[cfg(test)]") {
            // Skip the next item: up to its closing brace at the same depth.
            let mut depth = 0i32;
            let mut opened = false;
            for l in lines.by_ref() {
                depth += l.matches('{').count() as i32 - l.matches('}').count() as i32;
                opened |= l.contains('{');
                if (opened && depth <= 0) || (!opened && l.trim_end().ends_with(';')) {
                    break;
                }
            }
            continue;
        }
        let without_trailing = match line.find("//") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        };
        out.push_str(without_trailing);
        out.push('\n');
    }
    out
}

/// The first identifier of `s`.
fn ident(s: &str) -> Option<String> {
    let s = s.trim_start();
    let end = s.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(s.len());
    (end > 0).then(|| s[..end].to_owned())
}

/// Top-level modules named by `crate::...` paths in `code` (and by `super::`
/// in a file directly under `src/`, where `super` is the crate root).
fn references(code: &str, super_is_root: bool) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut prefixes = vec!["crate::"];
    if super_is_root {
        prefixes.push("super::");
    }
    for prefix in prefixes {
        for (i, _) in code.match_indices(prefix) {
            // `foo_crate::x` is not `crate::x`.
            if code[..i].chars().last().is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let rest = &code[i + prefix.len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // `crate::{a::X, b}`: the first identifier of each top-level item.
                let mut depth = 0;
                let mut item = String::new();
                for c in group.chars() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            out.extend(ident(&item));
                            item.clear();
                            continue;
                        }
                        _ => {}
                    }
                    item.push(c);
                }
                out.extend(ident(&item));
            } else {
                out.extend(ident(rest));
            }
        }
    }
    out
}

/// Names `lib.rs` re-exports (`pub use state::AppState;`), by the module
/// they come from: `crate::AppState` is a use of `state`.
fn re_exports() -> BTreeMap<String, String> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("read lib.rs");
    let mut out = BTreeMap::new();
    for line in lib.lines() {
        let Some(rest) = line.trim().strip_prefix("pub use ") else { continue };
        let Some((module, names)) = rest.trim_end_matches(';').split_once("::") else { continue };
        for name in names.trim_matches(|c| c == '{' || c == '}').split(',') {
            let name = name.rsplit("::").next().unwrap_or(name);
            let name = name.rsplit(" as ").next().unwrap_or(name).trim();
            out.insert(name.to_owned(), module.trim().to_owned());
        }
    }
    out
}

fn crate_graph() -> Graph {
    let modules = top_level_modules();
    let known: BTreeSet<&str> = modules.iter().map(String::as_str).collect();
    let aliases = re_exports();
    let mut graph = Graph::new();
    for m in &modules {
        let mut deps = BTreeSet::new();
        for f in files_of(m) {
            let text = std::fs::read_to_string(&f).expect("read source");
            let super_is_root = f.parent() == Some(src().as_path());
            let named = references(&code(&text), super_is_root).into_iter().map(|d| aliases.get(&d).cloned().unwrap_or(d));
            deps.extend(named.filter(|d| d != m && known.contains(d.as_str())));
        }
        graph.insert(m.clone(), deps);
    }
    graph
}

/// One cycle of `graph`, as the path `a -> b -> ... -> a`, if any.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(n: &str, graph: &Graph, marks: &mut BTreeMap<String, Mark>, path: &mut Vec<String>) -> Option<Vec<String>> {
        match marks.get(n) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let from = path.iter().position(|p| p == n).expect("open node is on the path");
                let mut cycle = path[from..].to_vec();
                cycle.push(n.to_owned());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(n.to_owned(), Mark::Open);
        path.push(n.to_owned());
        for d in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(d, graph, marks, path) {
                return Some(c);
            }
        }
        path.pop();
        marks.insert(n.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    graph.keys().find_map(|n| visit(n, graph, &mut marks, &mut Vec::new()))
}

#[test]
fn top_level_modules_form_no_cycle() {
    let graph = crate_graph();
    if let Some(cycle) = find_cycle(&graph) {
        panic!("module cycle: {}\nfull graph: {graph:#?}", cycle.join(" -> "));
    }
}

/// The parser sees what is there: known edges of the crate are found, and
/// a planted cycle is reported.
#[test]
fn the_cycle_check_sees_edges_and_cycles() {
    let graph = crate_graph();
    assert!(graph.len() > 10, "{graph:?}");
    for (from, to) in [("state", "usage"), ("state", "config"), ("db", "metrics"), ("rate_limit", "auth")] {
        assert!(graph[from].contains(to), "{from} -> {to} not found: {graph:?}");
    }
    assert_eq!(re_exports().get("AppState").map(String::as_str), Some("state"));
    let refs = references(&code("use crate::{a::X, b::{c, d}, e};\nlet x = crate::f::g();\n// crate::h\n"), false);
    assert_eq!(refs.into_iter().collect::<Vec<_>>(), ["a", "b", "e", "f"]);
    let mut planted = graph.clone();
    planted.get_mut("metrics").expect("metrics").insert("state".into());
    let cycle = find_cycle(&planted).expect("planted cycle found");
    assert!(cycle.contains(&"metrics".to_owned()) && cycle.contains(&"state".to_owned()), "{cycle:?}");
}
