//! The API crate's shape, read from its source with syn: no import circle between its modules,
//! no route file used outside `routes/`, and no file past 700 lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

/// Every library source file under `api/src` with its module path (`broadcasts::service`; the
/// crate root is ""). `main.rs` is the binary, a crate of its own.
fn modules() -> BTreeMap<String, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(Path::new(SRC), &mut files);
    files
        .into_iter()
        .filter(|f| f.file_name().unwrap() != "main.rs")
        .map(|f| {
            let rel = f.strip_prefix(SRC).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
                parts.pop();
            }
            (parts.join("::"), f)
        })
        .collect()
}

/// The paths a file names, made absolute (`crate::…`, `super::…`, `self::…`), outside
/// `#[cfg(test)]` items.
struct Paths<'a> {
    module: &'a str,
    found: BTreeSet<Vec<String>>,
}

impl Paths<'_> {
    fn absolute(&self, segments: &[String]) -> Option<Vec<String>> {
        let mut base: Vec<String> = if self.module.is_empty() {
            Vec::new()
        } else {
            self.module.split("::").map(str::to_owned).collect()
        };
        let mut rest = segments;
        match rest.first().map(String::as_str) {
            Some("crate") => {
                base.clear();
                rest = &rest[1..];
            }
            Some("self") => rest = &rest[1..],
            Some("super") => {
                while rest.first().map(String::as_str) == Some("super") {
                    base.pop()?;
                    rest = &rest[1..];
                }
            }
            _ => return None,
        }
        base.extend(rest.iter().cloned());
        Some(base)
    }

    fn tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => self.add(prefix, Some(n.ident.to_string())),
            syn::UseTree::Rename(r) => self.add(prefix, Some(r.ident.to_string())),
            syn::UseTree::Glob(_) => self.add(prefix, None),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.tree(prefix, t);
                }
            }
        }
    }

    fn add(&mut self, prefix: &[String], last: Option<String>) {
        let mut all = prefix.to_vec();
        all.extend(last.filter(|l| l != "self"));
        if let Some(p) = self.absolute(&all) {
            self.found.insert(p);
        }
    }
}

fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Meta>()
                .is_ok_and(|m| m.path().is_ident("test"))
    })
}

impl<'ast> Visit<'ast> for Paths<'_> {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs = match item {
            syn::Item::Mod(m) => &m.attrs,
            syn::Item::Fn(f) => &f.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Use(u) => &u.attrs,
            _ => return syn::visit::visit_item(self, item),
        };
        if !is_test_only(attrs) {
            syn::visit::visit_item(self, item);
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.tree(&mut Vec::new(), &u.tree);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        if let Some(p) = self.absolute(&segments) {
            self.found.insert(p);
        }
        syn::visit::visit_path(self, path);
    }
}

/// Which modules each module uses: the longest known module a named path starts with.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules();
    modules
        .iter()
        .map(|(module, file)| {
            let text = std::fs::read_to_string(file).unwrap();
            let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let mut paths = Paths {
                module,
                found: BTreeSet::new(),
            };
            paths.visit_file(&ast);
            let uses = paths
                .found
                .iter()
                .filter_map(|p| {
                    (1..=p.len())
                        .rev()
                        .map(|n| p[..n].join("::"))
                        .find(|m| modules.contains_key(m))
                })
                // A module naming its own items, or its parent's declarations of it, is no use.
                .filter(|m| m != module && !m.is_empty())
                .collect();
            (module.clone(), uses)
        })
        .collect()
}

/// The strongly connected components with more than one module (Tarjan).
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Tarjan<'g> {
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        out: Vec<Vec<String>>,
    }
    impl<'g> Tarjan<'g> {
        fn visit(&mut self, v: &'g str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                loop {
                    let w = self.stack.pop().unwrap();
                    self.on_stack.remove(w);
                    component.push(w.to_owned());
                    if w == v {
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
    let mut t = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.out
}

#[test]
fn the_api_modules_import_each_other_in_one_direction_only() {
    let graph = graph();
    // The reader sees what it is checking: the domain core and the routes are found.
    assert!(graph["routes::broadcasts"].contains("broadcasts::service"));
    assert!(graph["broadcasts::service"].contains("broadcasts::store"));
    let found = circles(&graph);
    let described: Vec<String> = found
        .iter()
        .map(|c| {
            c.iter()
                .map(|m| {
                    let inside: Vec<&str> = graph[m]
                        .iter()
                        .filter(|u| c.contains(u))
                        .map(String::as_str)
                        .collect();
                    format!("{m} -> {}", inside.join(", "))
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .collect();
    assert!(described.is_empty(), "import circles: {described:#?}");
}

#[test]
fn a_circle_is_found_when_there_is_one() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", &["b"][..]),
        ("b", &["c"][..]),
        ("c", &["a"][..]),
        ("d", &["a"][..]),
    ]
    .into_iter()
    .map(|(m, uses)| (m.to_owned(), uses.iter().map(|u| u.to_string()).collect()))
    .collect();
    assert_eq!(circles(&graph), vec![vec!["a", "b", "c"]]);
}

#[test]
fn route_files_are_used_by_the_routes_and_the_crate_root_only() {
    let graph = graph();
    let route_files: BTreeSet<&String> =
        graph.keys().filter(|m| m.starts_with("routes::")).collect();
    let offenders: Vec<String> = graph
        .iter()
        .filter(|(m, _)| !m.starts_with("routes::") && !m.is_empty() && *m != "routes")
        .flat_map(|(m, uses)| {
            uses.iter()
                .filter(|u| route_files.contains(u))
                .map(move |u| format!("{m} uses {u}"))
        })
        .collect();
    assert!(offenders.is_empty(), "{offenders:#?}");
}

#[test]
fn no_api_source_file_is_past_700_lines() {
    let long: Vec<String> = modules()
        .values()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).unwrap().lines().count();
            (n > 700).then(|| format!("{}: {n} lines", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "split these into modules: {long:#?}");
}
